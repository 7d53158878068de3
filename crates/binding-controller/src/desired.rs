//! The objects a binding wants, built from its spec and what was observed (pure).
//!
//! - [`desired_user`]: the PostgresUser dedicated to the binding — login, exactly the access
//!   asked for on one database, never CREATEDB, CREATEROLE or anything more; deletion policy
//!   Drop with what the role owned handed to the superuser, so deleting a binding drops its
//!   role but never an application's data.
//! - [`endpoint`]: where the application connects — the Cluster's `-rw` Service, or the
//!   Pooler the binding names once it is checked to pool the same Cluster.
//! - [`desired_secret`]: the binding Secret in the servicebinding.io layout (DESIGN.md §3).

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Resource;
use kube::api::ObjectMeta;
use tusk_api::binding::secret as layout;
use tusk_api::common::ClusterReference;
use tusk_api::names;
use tusk_api::pooler::PoolMode;
use tusk_api::user::{
    DeletionPolicy, DeletionSpec, Grant, PasswordSpec, PostgresUser, PostgresUserSpec,
    SUPERUSER_ROLE,
};
use tusk_api::{Pooler, ServiceBinding, ServiceBindingSpec};

use crate::error::PoolerProblem;
use crate::naming::BindingIdentity;

/// The PostgresUser for `binding`, in the Cluster's namespace. In the binding's own namespace
/// it is owned by the binding (garbage-collected with it); in another namespace owner
/// references cannot reach, so it carries the binding's labels and the binding's finalizer
/// deletes it.
pub fn desired_user(binding: &ServiceBinding, identity: &BindingIdentity) -> Option<PostgresUser> {
    let spec = &binding.spec;
    let cluster = spec.cluster.name.clone();
    let cluster_namespace = spec.cluster_namespace(&identity.namespace).to_owned();
    let owner_references = if spec.is_cross_namespace(&identity.namespace) {
        None
    } else {
        Some(vec![binding.controller_owner_ref(&())?])
    };
    let mut user = PostgresUser::new(
        &identity.user_name(),
        PostgresUserSpec {
            cluster: ClusterReference {
                name: cluster.clone(),
            },
            role_name: Some(identity.role_name()),
            login: true,
            createdb: false,
            createrole: false,
            inherit: true,
            connection_limit: -1,
            valid_until: None,
            databases: Vec::new(),
            grants: vec![Grant {
                database: spec.database.clone(),
                access: spec.access,
                schemas: spec.schemas.clone(),
            }],
            password: PasswordSpec::default(),
            deletion: DeletionSpec {
                policy: DeletionPolicy::Drop,
                reassign_owned_to: Some(SUPERUSER_ROLE.to_owned()),
                drop_owned_objects: false,
            },
        },
    );
    user.metadata = ObjectMeta {
        name: Some(identity.user_name()),
        namespace: Some(cluster_namespace),
        labels: Some(identity.user_labels(&cluster)),
        owner_references,
        ..ObjectMeta::default()
    };
    Some(user)
}

/// The server an application connects to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// A Service's DNS name, which the server certificate carries (so `verify-full` holds).
    pub host: String,
    pub port: u16,
    /// Whether a client keeps its server connection from one transaction to the next, so
    /// that server-side prepared statements stay valid: always straight to PostgreSQL and
    /// through PgBouncer in session mode, not in transaction or statement mode.
    pub keeps_prepared_statements: bool,
}

impl Endpoint {
    /// The Cluster's `-rw` Service, `<cluster>-rw.<namespace>.svc`: always the primary.
    pub fn cluster(cluster: &str, namespace: &str) -> Self {
        Self {
            host: names::read_write_host(cluster, namespace),
            port: names::POSTGRES_PORT,
            keeps_prepared_statements: true,
        }
    }

    /// The Service of Pooler `pooler` in `namespace`, `<pooler>.<namespace>.svc`, whose
    /// PgBouncer pools in `mode`.
    pub fn pooler(pooler: &str, namespace: &str, mode: PoolMode) -> Self {
        Self {
            host: names::pooler_host(pooler, namespace),
            port: names::POOLER_PORT,
            keeps_prepared_statements: mode == PoolMode::Session,
        }
    }
}

/// Where a binding with `spec` connects, given the Pooler observed under the name in
/// `spec.pooler` (in `cluster_namespace`, the Cluster's): that Pooler's Service when it pools
/// the binding's Cluster, the Cluster's `-rw` Service when the binding names no Pooler.
/// Whether the Pooler is Ready does not matter: its Service's name does not change.
pub fn endpoint(
    spec: &ServiceBindingSpec,
    cluster_namespace: &str,
    pooler: Option<&Pooler>,
) -> Result<Endpoint, PoolerProblem> {
    let Some(name) = spec.pooler_name() else {
        return Ok(Endpoint::cluster(&spec.cluster.name, cluster_namespace));
    };
    let pooler = pooler.ok_or_else(|| PoolerProblem::NotFound {
        namespace: cluster_namespace.to_owned(),
        name: name.to_owned(),
    })?;
    if pooler.spec.cluster.name != spec.cluster.name {
        return Err(PoolerProblem::ClusterMismatch {
            namespace: cluster_namespace.to_owned(),
            pooler: name.to_owned(),
            pooled: pooler.spec.cluster.name.clone(),
            cluster: spec.cluster.name.clone(),
        });
    }
    Ok(Endpoint::pooler(
        name,
        cluster_namespace,
        pooler.spec.pgbouncer.pool_mode,
    ))
}

/// Where and as whom the application connects.
#[derive(Clone, PartialEq, Eq)]
pub struct Connection {
    pub endpoint: Endpoint,
    pub database: String,
    pub username: String,
    pub password: String,
    /// The CA the server certificate chains to, PEM.
    pub ca_pem: Vec<u8>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("endpoint", &self.endpoint)
            .field("database", &self.database)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// The connection to `database` through `endpoint`.
    pub fn new(
        endpoint: Endpoint,
        database: &str,
        username: String,
        password: String,
        ca_pem: Vec<u8>,
    ) -> Self {
        Self {
            endpoint,
            database: database.to_owned(),
            username,
            password,
            ca_pem,
        }
    }

    /// `postgresql://user:password@host:port/database?sslmode=verify-full`, percent-encoded.
    pub fn uri(&self) -> String {
        format!(
            "postgresql://{}:{}@{}:{}/{}?sslmode={}",
            percent_encode(&self.username),
            percent_encode(&self.password),
            self.endpoint.host,
            self.endpoint.port,
            percent_encode(&self.database),
            layout::SSLMODE
        )
    }

    /// `jdbc:postgresql://host:port/database?sslmode=verify-full`; the credentials stay in their
    /// own keys. Where the server connection may change between transactions (PgBouncer in
    /// transaction or statement mode), `&prepareThreshold=0` keeps pgJDBC on unnamed
    /// statements: by default it prepares a named server-side statement after five executions
    /// of the same query, which PgBouncer before 1.21 does not carry over to the next server
    /// connection (`prepared statement "S_1" does not exist`).
    pub fn jdbc_url(&self) -> String {
        let mut url = format!(
            "jdbc:postgresql://{}:{}/{}?sslmode={}",
            self.endpoint.host,
            self.endpoint.port,
            percent_encode(&self.database),
            layout::SSLMODE
        );
        if !self.endpoint.keeps_prepared_statements {
            url.push_str("&prepareThreshold=0");
        }
        url
    }
}

/// The binding Secret `name` in the binding's namespace, owned by the binding.
pub fn desired_secret(
    binding: &ServiceBinding,
    identity: &BindingIdentity,
    name: &str,
    connection: &Connection,
) -> Option<Secret> {
    let text = |value: &str| ByteString(value.as_bytes().to_vec());
    let data = BTreeMap::from([
        (layout::KEY_TYPE.to_owned(), text(layout::BINDING_TYPE)),
        (layout::KEY_PROVIDER.to_owned(), text(layout::PROVIDER)),
        (layout::KEY_HOST.to_owned(), text(&connection.endpoint.host)),
        (
            layout::KEY_PORT.to_owned(),
            text(&connection.endpoint.port.to_string()),
        ),
        (layout::KEY_DATABASE.to_owned(), text(&connection.database)),
        (layout::KEY_USERNAME.to_owned(), text(&connection.username)),
        (layout::KEY_PASSWORD.to_owned(), text(&connection.password)),
        (layout::KEY_URI.to_owned(), text(&connection.uri())),
        (
            layout::KEY_JDBC_URL.to_owned(),
            text(&connection.jdbc_url()),
        ),
        (layout::KEY_SSLMODE.to_owned(), text(layout::SSLMODE)),
        (
            layout::KEY_CA_CRT.to_owned(),
            ByteString(connection.ca_pem.clone()),
        ),
    ]);
    Some(Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(identity.namespace.clone()),
            labels: Some(identity.secret_labels()),
            owner_references: Some(vec![binding.controller_owner_ref(&())?]),
            ..ObjectMeta::default()
        },
        type_: Some(layout::SECRET_TYPE.to_owned()),
        data: Some(data),
        ..Secret::default()
    })
}

/// Annotation `tusk-operator render` puts on what it prints.
pub const RENDER_NOTE_ANNOTATION: &str = "tusk.dev/render-note";

/// The PostgresUser and binding Secret as `tusk-operator render` shows them, offline. The
/// binding's UID is assigned by the API server, so the PostgresUser's name (whose last eight
/// characters hash it) is shown for a placeholder UID; secret values are placeholders in
/// `stringData`, never real secrets. A cross-namespace binding also needs the Cluster's
/// consent, which only the live Cluster can give.
pub fn rendered(binding: &ServiceBinding) -> Option<(PostgresUser, Secret)> {
    let mut binding = binding.clone();
    let namespace = binding
        .metadata
        .namespace
        .get_or_insert_with(|| "default".to_owned())
        .clone();
    let uid = binding
        .metadata
        .uid
        .get_or_insert_with(|| "<uid of the ServiceBinding>".to_owned())
        .clone();
    let identity = BindingIdentity {
        namespace: namespace.clone(),
        name: binding.metadata.name.clone()?,
        uid,
    };
    let computed = identity.user_name();
    // The hash is of a UID the API server has not assigned yet: show where it goes instead.
    let shown = format!(
        "{}-<8 hex digits hashing the UID>",
        computed.rsplit_once('-').map_or("", |(prefix, _)| prefix)
    );
    let cluster = binding.spec.cluster.name.clone();
    let cluster_namespace = binding.spec.cluster_namespace(&namespace).to_owned();
    let mut note = "placeholders stand for secret values and for the name's last 8 characters, a hash of the UID the API server assigns".to_owned();
    if binding.spec.is_cross_namespace(&namespace) {
        note.push_str(&format!(
            "; created only while Cluster {cluster} in namespace {cluster_namespace} admits namespace {namespace} (spec.bindingPolicy)"
        ));
    }
    let mut user = desired_user(&binding, &identity)?;
    user.metadata.name = Some(shown.clone());
    user.spec.role_name = Some(shown.clone());
    user.metadata.annotations = Some(BTreeMap::from([(
        RENDER_NOTE_ANNOTATION.to_owned(),
        note.clone(),
    )]));
    // Offline there is no Pooler to read its pool mode from: shown as in session mode, and the
    // note says what transaction or statement mode adds.
    let (endpoint, through) = match binding.spec.pooler_name() {
        None => (
            Endpoint::cluster(&cluster, &cluster_namespace),
            String::new(),
        ),
        Some(pooler) => (
            Endpoint::pooler(pooler, &cluster_namespace, PoolMode::Session),
            format!(
                "; through Pooler {pooler} in namespace {cluster_namespace}, which must pool Cluster {cluster}; jdbc-url ends in &prepareThreshold=0 when that Pooler's poolMode is Transaction or Statement"
            ),
        ),
    };
    let connection = Connection::new(
        endpoint,
        &binding.spec.database,
        computed.clone(),
        "<generated>".to_owned(),
        Vec::new(),
    );
    let secret_name = binding.spec.secret_name(&identity.name).to_owned();
    let mut secret = desired_secret(&binding, &identity, &secret_name, &connection)?;
    let encoded = percent_encode(&connection.password);
    let string_data = secret
        .data
        .take()?
        .into_iter()
        .map(|(key, value)| {
            let text = String::from_utf8_lossy(&value.0)
                .replace(&encoded, &connection.password)
                .replace(&computed, &shown);
            (key, text)
        })
        .chain([(
            layout::KEY_CA_CRT.to_owned(),
            "<ca.crt of the Cluster's CA Secret>".to_owned(),
        )])
        .collect();
    secret.string_data = Some(string_data);
    secret.metadata.annotations = Some(BTreeMap::from([(
        RENDER_NOTE_ANNOTATION.to_owned(),
        format!("{note}{through}; written once the PostgresUser is Ready"),
    )]));
    Some((user, secret))
}

/// Whether `secret` is controlled by the binding with `uid`.
pub fn is_owned_by(secret: &Secret, uid: &str) -> bool {
    secret
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|owner| owner.uid == uid && owner.controller == Some(true))
}

/// The text of `key` in `secret`, if present, UTF-8 and not empty.
pub fn secret_text(secret: &Secret, key: &str) -> Option<String> {
    let bytes = secret.data.as_ref()?.get(key)?;
    String::from_utf8(bytes.0.clone())
        .ok()
        .filter(|text| !text.is_empty())
}

/// Percent-encodes everything but RFC 3986's unreserved characters, for URI user info, paths
/// and query values.
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tusk_api::common::Access;

    fn binding(yaml: &str) -> ServiceBinding {
        let mut binding: ServiceBinding = serde_yaml_ng::from_str(yaml).unwrap();
        binding.metadata.uid = Some("uid-1".into());
        binding
    }

    const SAME: &str = "apiVersion: tusk.dev/v1alpha1
kind: ServiceBinding
metadata: {name: orders, namespace: db}
spec:
  cluster: {name: db}
  database: shop
  access: ReadOnly
  schemas: [public, orders]
";

    const CROSS: &str = "apiVersion: tusk.dev/v1alpha1
kind: ServiceBinding
metadata: {name: storefront, namespace: shop}
spec:
  cluster: {name: db, namespace: db}
  database: shop
";

    fn identity(binding: &ServiceBinding) -> BindingIdentity {
        BindingIdentity {
            namespace: binding.metadata.namespace.clone().unwrap(),
            name: binding.metadata.name.clone().unwrap(),
            uid: binding.metadata.uid.clone().unwrap(),
        }
    }

    fn connection() -> Connection {
        Connection::new(
            Endpoint::cluster("db", "db"),
            "shop data",
            "shop-storefront-1234abcd".into(),
            "p@ss:word/?#".into(),
            b"PEM".to_vec(),
        )
    }

    #[test]
    fn same_namespace_user_is_owned_and_asks_exactly_for_the_binding_access() {
        let binding = binding(SAME);
        let id = identity(&binding);
        let user = desired_user(&binding, &id).unwrap();
        assert_eq!(user.metadata.namespace.as_deref(), Some("db"));
        assert_eq!(user.metadata.name, Some(id.user_name()));
        let owner = &user.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
            ("ServiceBinding", "uid-1", Some(true))
        );
        let spec = &user.spec;
        assert_eq!(spec.role_name, Some(id.role_name()));
        assert!(spec.login && !spec.createdb && !spec.createrole);
        assert!(
            spec.databases.is_empty(),
            "a binding never creates or owns databases"
        );
        assert_eq!(spec.grants.len(), 1);
        assert_eq!(spec.grants[0].database, "shop");
        assert_eq!(spec.grants[0].access, Access::ReadOnly);
        assert_eq!(spec.grants[0].schemas, vec!["public", "orders"]);
        assert_eq!(spec.deletion.policy, DeletionPolicy::Drop);
        assert_eq!(spec.deletion.reassign_owned_to.as_deref(), Some("postgres"));
        assert!(
            !spec.deletion.drop_owned_objects,
            "data survives its binding"
        );
        assert!(user.status.is_none());
    }

    #[test]
    fn cross_namespace_user_lives_with_the_cluster_and_is_found_by_labels() {
        let binding = binding(CROSS);
        let id = identity(&binding);
        let user = desired_user(&binding, &id).unwrap();
        assert_eq!(user.metadata.namespace.as_deref(), Some("db"));
        assert!(user.metadata.owner_references.is_none());
        let labels = user.metadata.labels.unwrap();
        assert_eq!(labels["tusk.dev/binding-namespace"], "shop");
        assert_eq!(labels["tusk.dev/binding-name"], "storefront");
        assert_eq!(labels["tusk.dev/binding-uid"], "uid-1");
        assert_eq!(user.spec.grants[0].access, Access::ReadWrite);
    }

    #[test]
    fn secret_has_the_servicebinding_layout_and_is_owned_by_the_binding() {
        let binding = binding(CROSS);
        let id = identity(&binding);
        let secret = desired_secret(&binding, &id, "storefront", &connection()).unwrap();
        assert_eq!(
            secret.type_.as_deref(),
            Some("servicebinding.io/postgresql")
        );
        assert_eq!(secret.metadata.namespace.as_deref(), Some("shop"));
        assert!(is_owned_by(&secret, "uid-1"));
        assert!(!is_owned_by(&secret, "uid-2"));
        let data = secret.data.as_ref().unwrap();
        let mut keys: Vec<&str> = data.keys().map(String::as_str).collect();
        let mut expected = layout::KEYS.to_vec();
        keys.sort_unstable();
        expected.sort_unstable();
        assert_eq!(keys, expected);
        let text = |key| secret_text(&secret, key).unwrap();
        assert_eq!(text("type"), "postgresql");
        assert_eq!(text("provider"), "tusk");
        assert_eq!(text("host"), "db-rw.db.svc");
        assert_eq!(text("port"), "5432");
        assert_eq!(text("database"), "shop data");
        assert_eq!(text("username"), "shop-storefront-1234abcd");
        assert_eq!(text("password"), "p@ss:word/?#");
        assert_eq!(text("sslmode"), "verify-full");
        assert_eq!(text("ca.crt"), "PEM");
        assert_eq!(
            text("uri"),
            "postgresql://shop-storefront-1234abcd:p%40ss%3Aword%2F%3F%23@db-rw.db.svc:5432/shop%20data?sslmode=verify-full"
        );
        assert_eq!(
            text("jdbc-url"),
            "jdbc:postgresql://db-rw.db.svc:5432/shop%20data?sslmode=verify-full"
        );
        assert!(
            !text("jdbc-url").contains("p@ss"),
            "credentials stay in their own keys"
        );
    }

    #[test]
    fn rendered_objects_show_placeholders_never_a_password() {
        let mut binding = binding(CROSS);
        binding.metadata.uid = None;
        let (user, secret) = rendered(&binding).unwrap();
        assert_eq!(user.metadata.namespace.as_deref(), Some("db"));
        assert!(secret.data.is_none());
        let data = secret.string_data.unwrap();
        assert_eq!(data["password"], "<generated>");
        assert!(
            data["uri"].contains(":<generated>@db-rw.db.svc:5432/shop"),
            "{}",
            data["uri"]
        );
        assert!(data["ca.crt"].starts_with('<'));
        assert_eq!(data["username"], user.spec.role_name.clone().unwrap());
        assert_eq!(
            user.metadata.name.as_deref(),
            Some("shop-storefront-<8 hex digits hashing the UID>")
        );
        let note = &user.metadata.annotations.unwrap()[RENDER_NOTE_ANNOTATION];
        assert!(note.contains("spec.bindingPolicy"), "{note}");
    }

    fn pooler(cluster: &str, mode: &str) -> Pooler {
        serde_yaml_ng::from_str(&format!(
            "apiVersion: tusk.dev/v1alpha1
kind: Pooler
metadata: {{name: db-pooler, namespace: db}}
spec:
  cluster: {{name: {cluster}}}
  pgbouncer: {{poolMode: {mode}}}
"
        ))
        .unwrap()
    }

    fn pooled(yaml: &str) -> ServiceBinding {
        binding(&format!("{yaml}  pooler: {{name: db-pooler}}\n"))
    }

    /// The binding Secret of `binding` for the Pooler observed (if any), as text by key.
    fn secret_through(
        binding: &ServiceBinding,
        pooler: Option<&Pooler>,
    ) -> Result<BTreeMap<String, String>, PoolerProblem> {
        let id = identity(binding);
        let endpoint = endpoint(&binding.spec, "db", pooler)?;
        let connection = Connection::new(
            endpoint,
            "shop",
            "shop-storefront-1234abcd".into(),
            "p@ss".into(),
            b"PEM".to_vec(),
        );
        let secret = desired_secret(binding, &id, "storefront", &connection).unwrap();
        Ok(layout::KEYS
            .iter()
            .map(|key| ((*key).to_owned(), secret_text(&secret, key).unwrap()))
            .collect())
    }

    #[test]
    fn secret_through_a_pooler_names_its_service_with_the_same_credentials() {
        let direct = secret_through(&binding(CROSS), None).unwrap();
        let pooled = secret_through(&pooled(CROSS), Some(&pooler("db", "Transaction"))).unwrap();
        assert_eq!(pooled["host"], "db-pooler.db.svc");
        assert_eq!(pooled["port"], "5432");
        assert_eq!(
            pooled["uri"],
            "postgresql://shop-storefront-1234abcd:p%40ss@db-pooler.db.svc:5432/shop?sslmode=verify-full"
        );
        assert_eq!(
            pooled["jdbc-url"],
            "jdbc:postgresql://db-pooler.db.svc:5432/shop?sslmode=verify-full&prepareThreshold=0"
        );
        for key in [
            "type", "provider", "database", "username", "password", "sslmode", "ca.crt",
        ] {
            assert_eq!(
                pooled[key], direct[key],
                "{key} is the same through the pooler"
            );
        }
    }

    #[test]
    fn prepare_threshold_is_zero_only_where_server_connections_change_hands() {
        let binding = pooled(CROSS);
        for (mode, expected) in [
            ("Session", None),
            ("Transaction", Some("&prepareThreshold=0")),
            ("Statement", Some("&prepareThreshold=0")),
        ] {
            let jdbc = &secret_through(&binding, Some(&pooler("db", mode))).unwrap()["jdbc-url"];
            assert_eq!(
                jdbc.strip_prefix(
                    "jdbc:postgresql://db-pooler.db.svc:5432/shop?sslmode=verify-full"
                )
                .map(|rest| (!rest.is_empty()).then_some(rest)),
                Some(expected),
                "{mode}: {jdbc}"
            );
            let uri = &secret_through(&binding, Some(&pooler("db", mode))).unwrap()["uri"];
            assert!(
                uri.ends_with("?sslmode=verify-full"),
                "libpq never prepares unasked: {uri}"
            );
        }
        let direct = secret_through(&self::binding(CROSS), None).unwrap();
        assert!(!direct["jdbc-url"].contains("prepareThreshold"));
    }

    #[test]
    fn removing_the_pooler_points_the_secret_back_at_the_cluster() {
        let still_there = pooler("db", "Transaction");
        let secret = secret_through(&binding(CROSS), Some(&still_there)).unwrap();
        assert_eq!(secret["host"], "db-rw.db.svc");
        assert_eq!(
            secret["jdbc-url"],
            "jdbc:postgresql://db-rw.db.svc:5432/shop?sslmode=verify-full"
        );
        assert!(secret["uri"].contains("@db-rw.db.svc:5432/"));
    }

    #[test]
    fn a_missing_pooler_or_one_of_another_cluster_gives_no_endpoint() {
        let binding = pooled(CROSS);
        let missing = endpoint(&binding.spec, "db", None).unwrap_err();
        assert_eq!(missing.reason(), "PoolerNotFound");
        assert!(
            missing
                .to_string()
                .contains("\"db-pooler\" does not exist in namespace \"db\""),
            "{missing}"
        );
        let mismatch =
            endpoint(&binding.spec, "db", Some(&pooler("reports", "Session"))).unwrap_err();
        assert_eq!(mismatch.reason(), "PoolerClusterMismatch");
        assert!(
            mismatch.to_string().contains("pools Cluster \"reports\""),
            "{mismatch}"
        );
    }

    #[test]
    fn rendered_secret_through_a_pooler_shows_its_host_and_what_the_mode_adds() {
        let mut binding = pooled(CROSS);
        binding.metadata.uid = None;
        let (_, secret) = rendered(&binding).unwrap();
        let data = secret.string_data.unwrap();
        assert_eq!(data["host"], "db-pooler.db.svc");
        assert!(
            data["uri"].contains(":<generated>@db-pooler.db.svc:5432/shop"),
            "{}",
            data["uri"]
        );
        let note = &secret.metadata.annotations.unwrap()[RENDER_NOTE_ANNOTATION];
        assert!(
            note.contains("Pooler db-pooler") && note.contains("prepareThreshold=0"),
            "{note}"
        );
    }

    #[test]
    fn connection_debug_hides_the_password() {
        assert!(!format!("{:?}", connection()).contains("p@ss"));
    }
}

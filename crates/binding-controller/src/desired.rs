//! The objects a binding wants, built from its spec and what was observed (pure).
//!
//! - [`desired_user`]: the PostgresUser dedicated to the binding — login, exactly the access
//!   asked for on one database, never CREATEDB, CREATEROLE or anything more; deletion policy
//!   Drop with what the role owned handed to the superuser, so deleting a binding drops its
//!   role but never an application's data.
//! - [`desired_secret`]: the binding Secret in the servicebinding.io layout (DESIGN.md §3).

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Resource;
use kube::api::ObjectMeta;
use tusk_api::ServiceBinding;
use tusk_api::binding::secret as layout;
use tusk_api::common::ClusterReference;
use tusk_api::names;
use tusk_api::user::{
    DeletionPolicy, DeletionSpec, Grant, PasswordSpec, PostgresUser, PostgresUserSpec,
    SUPERUSER_ROLE,
};

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

/// Where and as whom the application connects.
#[derive(Clone, PartialEq, Eq)]
pub struct Connection {
    /// The Cluster's `-rw` Service, `<cluster>-rw.<namespace>.svc` (the name its server
    /// certificate carries).
    pub host: String,
    pub port: u16,
    pub database: String,
    pub username: String,
    pub password: String,
    /// The CA the server certificate chains to, PEM.
    pub ca_pem: Vec<u8>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("database", &self.database)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// The connection to `database` of Cluster `cluster` in `cluster_namespace`.
    pub fn new(
        cluster: &str,
        cluster_namespace: &str,
        database: &str,
        username: String,
        password: String,
        ca_pem: Vec<u8>,
    ) -> Self {
        Self {
            host: names::read_write_host(cluster, cluster_namespace),
            port: names::POSTGRES_PORT,
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
            self.host,
            self.port,
            percent_encode(&self.database),
            layout::SSLMODE
        )
    }

    /// `jdbc:postgresql://host:port/database?sslmode=verify-full`; the credentials stay in their
    /// own keys.
    pub fn jdbc_url(&self) -> String {
        format!(
            "jdbc:postgresql://{}:{}/{}?sslmode={}",
            self.host,
            self.port,
            percent_encode(&self.database),
            layout::SSLMODE
        )
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
        (layout::KEY_HOST.to_owned(), text(&connection.host)),
        (
            layout::KEY_PORT.to_owned(),
            text(&connection.port.to_string()),
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
    let connection = Connection::new(
        &cluster,
        &cluster_namespace,
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
        format!("{note}; written once the PostgresUser is Ready"),
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
            "db",
            "db",
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

    #[test]
    fn connection_debug_hides_the_password() {
        assert!(!format!("{:?}", connection()).contains("p@ss"));
    }
}

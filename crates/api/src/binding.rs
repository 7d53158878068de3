//! The `ServiceBinding` resource: one application's connection to a Cluster.
//!
//! ```text
//!   namespace of the app                     namespace of the Cluster
//!   ServiceBinding ──creates──────────────►  PostgresUser (dedicated, deletion: Drop)
//!        │                                        │ Ready
//!        └──writes── Secret (servicebinding.io) ◄─┘ credentials
//! ```
//!
//! Each binding gets its own role, so two applications on one database never share
//! credentials. A binding in another namespace than its Cluster is refused unless the Cluster's
//! `spec.bindingPolicy` admits that namespace; owner references cannot cross namespaces, so the
//! PostgresUser of such a binding is found by the `tusk.dev/binding-*` labels and cleaned up by
//! the binding's finalizer.
//!
//! With `spec.pooler` the Secret points at a Pooler (PgBouncer, in the Cluster's namespace and
//! pooling the same Cluster) instead of the Cluster's `-rw` Service; the role, password and CA
//! are the same, because PgBouncer authenticates clients with their own roles.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{Access, default_schemas};
use crate::condition::Condition;

/// A connection of one application to a Cluster: a dedicated PostgreSQL role plus a Secret in
/// the servicebinding.io layout, in the binding's namespace.
// Every `printcolumn(...)` repeats `type_ = ...`, which clippy takes for a duplicate.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "tusk.dev",
    version = "v1alpha1",
    kind = "ServiceBinding",
    plural = "servicebindings",
    namespaced,
    status = "ServiceBindingStatus",
    category = "tusk",
    shortname = "pgbinding",
    doc = "An application's connection to a Cluster: tusk creates a role for this binding alone \
           and writes its credentials to a Secret in the servicebinding.io layout, in the \
           binding's namespace.",
    validation = kube::core::Rule::new("self.metadata.name.size() <= 63").message(
        "ServiceBinding names are at most 63 characters: the name is stored as a label value on the PostgresUser created for it"
    ),
    printcolumn(
        name = "Cluster",
        type_ = "string",
        json_path = ".spec.cluster.name",
        description = "The Cluster bound to"
    ),
    printcolumn(
        name = "Database",
        type_ = "string",
        json_path = ".spec.database",
        description = "The database the application connects to"
    ),
    printcolumn(
        name = "Access",
        type_ = "string",
        json_path = ".spec.access",
        description = "Owner, ReadWrite or ReadOnly"
    ),
    printcolumn(
        name = "Secret",
        type_ = "string",
        json_path = ".status.binding.name",
        description = "The Secret holding the connection details"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "Whether the Secret is written and the role ready"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        description = "Reason of the Ready condition",
        priority = 1
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "self.cluster == oldSelf.cluster",
        "message": "spec.cluster cannot be changed: create a new ServiceBinding for the other Cluster (and delete this one)"
    },
    {
        "rule": "has(self.secretName) == has(oldSelf.secretName) && (!has(self.secretName) || self.secretName == oldSelf.secretName)",
        "message": "spec.secretName cannot be changed: applications mount the Secret by name; create a new ServiceBinding instead"
    }
]))]
#[serde(rename_all = "camelCase")]
pub struct ServiceBindingSpec {
    /// The Cluster to connect to: in this namespace, or in `namespace` if that Cluster's
    /// `spec.bindingPolicy` admits this namespace. Cannot be changed.
    pub cluster: BindingClusterReference,

    /// The database to connect to, 1 to 63 bytes. It must exist (for example created by a
    /// PostgresUser's `databases`). A binding never takes over a database: with access Owner
    /// its role owns the named schemas and may create objects in the database.
    #[schemars(schema_with = "crate::user::identifier_schema")]
    pub database: String,

    /// What the application may do in the database: Owner (owns the named schemas, may
    /// change their structure), ReadWrite (the default: reads and writes data, no DDL) or
    /// ReadOnly (reads data). Read and write privileges cover tables created later too.
    #[serde(default)]
    pub access: Access,

    /// The schemas the access applies to. Default `["public"]`. At most 32, each 1 to 63
    /// bytes.
    #[serde(default = "default_schemas")]
    #[schemars(schema_with = "crate::user::schema_list_schema")]
    pub schemas: Vec<String>,

    /// Name of the Secret written in this namespace. Default: the ServiceBinding's name. tusk
    /// refuses (reason SecretConflict) to overwrite an existing Secret it does not own. Cannot
    /// be changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::dns_subdomain")]
    pub secret_name: Option<String>,

    /// Connect through a Pooler (PgBouncer) instead of straight to the Cluster: the Secret's
    /// host, port, uri and jdbc-url then name the Pooler's Service, with the same role and
    /// password. The Pooler lives in the Cluster's namespace and must pool this binding's
    /// Cluster. Not waited for: the Secret is written whether the Pooler is Ready or not.
    /// Removing the field points the Secret back at the Cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pooler: Option<BindingPoolerReference>,
}

/// The Cluster a ServiceBinding connects to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BindingClusterReference {
    /// Name of the Cluster.
    #[schemars(schema_with = "crate::schema::dns_label")]
    pub name: String,

    /// Namespace of the Cluster. Default: the ServiceBinding's namespace. Another namespace is
    /// refused (reason NamespaceNotAllowed) unless the Cluster's `spec.bindingPolicy` admits
    /// this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::dns_label")]
    pub namespace: Option<String>,
}

/// The Pooler a ServiceBinding connects through.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BindingPoolerReference {
    /// Name of the Pooler, in the Cluster's namespace (`spec.cluster.namespace`, or this
    /// one). Missing, it is reported as reason PoolerNotFound; pooling another Cluster, as
    /// PoolerClusterMismatch.
    #[schemars(schema_with = "crate::schema::dns_label")]
    pub name: String,
}

/// What the ServiceBinding controller observed and did.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceBindingStatus {
    /// `Ready`: the role is ready and the Secret holds its current credentials. The reason
    /// says what is awaited or refused when it is not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::schema::conditions")]
    pub conditions: Vec<Condition>,

    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// The Secret with the connection details, once written (the servicebinding.io
    /// Provisioned Service field that binding tools read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binding: Option<BindingReference>,

    /// The PostgresUser created for this binding, in the Cluster's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<UserReference>,

    /// The PostgreSQL role the application logs in as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub role_name: Option<String>,
}

/// A Secret in the binding's namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BindingReference {
    /// Name of the Secret.
    #[schemars(length(max = 253))]
    pub name: String,
}

/// A PostgresUser, possibly in another namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserReference {
    /// Name of the PostgresUser.
    #[schemars(length(max = 253))]
    pub name: String,

    /// Namespace of the PostgresUser (the Cluster's).
    #[schemars(length(max = 63))]
    pub namespace: String,
}

/// Reasons the ServiceBinding controller writes into the `Ready` condition (also metric
/// labels).
pub mod reasons {
    /// The Secret is written and the role is ready.
    pub const BOUND: &str = "Bound";
    /// The binding's PostgresUser is not Ready yet (its own reason is in the message).
    pub const USER_NOT_READY: &str = "UserNotReady";
    /// The referenced Cluster does not exist.
    pub const CLUSTER_NOT_FOUND: &str = "ClusterNotFound";
    /// The Cluster exists but is not Ready.
    pub const CLUSTER_NOT_READY: &str = "ClusterNotReady";
    /// The Cluster is in another namespace and its `spec.bindingPolicy` does not admit this
    /// one (or no longer does).
    pub const NAMESPACE_NOT_ALLOWED: &str = "NamespaceNotAllowed";
    /// A Secret of the target name exists and is not owned by this binding.
    pub const SECRET_CONFLICT: &str = "SecretConflict";
    /// The spec cannot be applied as written; the message says what to change.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// `spec.pooler` names a Pooler that does not exist in the Cluster's namespace.
    pub const POOLER_NOT_FOUND: &str = "PoolerNotFound";
    /// `spec.pooler` names a Pooler of another Cluster than `spec.cluster`.
    pub const POOLER_CLUSTER_MISMATCH: &str = "PoolerClusterMismatch";
}

/// The layout of the Secret a ServiceBinding writes: the servicebinding.io Provisioned
/// Service convention for PostgreSQL (DESIGN.md §3). Application frameworks (Spring Cloud
/// Bindings, Quarkus) read these keys from a mounted binding directory.
pub mod secret {
    /// The Secret's `type`.
    pub const SECRET_TYPE: &str = "servicebinding.io/postgresql";
    /// Value of the `type` key.
    pub const BINDING_TYPE: &str = "postgresql";
    /// Value of the `provider` key.
    pub const PROVIDER: &str = "tusk";
    /// Value of the `sslmode` key: TLS, with the server certificate checked against `ca.crt`
    /// and the host name.
    pub const SSLMODE: &str = "verify-full";

    pub const KEY_TYPE: &str = "type";
    pub const KEY_PROVIDER: &str = "provider";
    /// The Cluster's `-rw` Service, fully qualified (`<cluster>-rw.<namespace>.svc`), or with
    /// `spec.pooler` the Pooler's Service (`<pooler>.<namespace>.svc`).
    pub const KEY_HOST: &str = "host";
    pub const KEY_PORT: &str = "port";
    pub const KEY_DATABASE: &str = "database";
    pub const KEY_USERNAME: &str = "username";
    pub const KEY_PASSWORD: &str = "password";
    /// `postgresql://user:password@host:port/database?sslmode=verify-full`, percent-encoded.
    pub const KEY_URI: &str = "uri";
    /// `jdbc:postgresql://host:port/database?sslmode=verify-full` (credentials in their own
    /// keys), with `&prepareThreshold=0` through a Pooler in transaction or statement mode.
    pub const KEY_JDBC_URL: &str = "jdbc-url";
    pub const KEY_SSLMODE: &str = "sslmode";
    /// The Cluster's CA certificate, PEM.
    pub const KEY_CA_CRT: &str = "ca.crt";

    /// Every key the Secret holds, in a stable order.
    pub const KEYS: [&str; 11] = [
        KEY_TYPE,
        KEY_PROVIDER,
        KEY_HOST,
        KEY_PORT,
        KEY_DATABASE,
        KEY_USERNAME,
        KEY_PASSWORD,
        KEY_URI,
        KEY_JDBC_URL,
        KEY_SSLMODE,
        KEY_CA_CRT,
    ];
}

impl ServiceBindingSpec {
    /// The namespace of the Cluster: `cluster.namespace`, or the binding's own.
    pub fn cluster_namespace<'a>(&'a self, binding_namespace: &'a str) -> &'a str {
        self.cluster
            .namespace
            .as_deref()
            .unwrap_or(binding_namespace)
    }

    /// Whether the Cluster lives in another namespace than the binding (and so needs the
    /// Cluster's consent, and a finalizer instead of owner references).
    pub fn is_cross_namespace(&self, binding_namespace: &str) -> bool {
        self.cluster_namespace(binding_namespace) != binding_namespace
    }

    /// The name of the Pooler to connect through, if any (it lives in the Cluster's
    /// namespace).
    pub fn pooler_name(&self) -> Option<&str> {
        self.pooler.as_ref().map(|pooler| pooler.name.as_str())
    }

    /// The name of the Secret to write: `secretName`, or the binding's name.
    pub fn secret_name<'a>(&'a self, binding_name: &'a str) -> &'a str {
        self.secret_name.as_deref().unwrap_or(binding_name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::user::tests::cel_errors;

    const MINIMAL: &str = "apiVersion: tusk.dev/v1alpha1
kind: ServiceBinding
metadata: {name: orders, namespace: shop}
spec:
  cluster: {name: db}
  database: shop
";

    fn binding(yaml: &str) -> ServiceBinding {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn minimal_binding_defaults_to_read_write_on_public_in_its_namespace() {
        let binding = binding(MINIMAL);
        let spec = &binding.spec;
        assert_eq!(spec.access, Access::ReadWrite);
        assert_eq!(spec.schemas, vec!["public"]);
        assert_eq!(spec.cluster_namespace("shop"), "shop");
        assert!(!spec.is_cross_namespace("shop"));
        assert_eq!(spec.secret_name("orders"), "orders");
    }

    #[test]
    fn cluster_in_another_namespace_is_cross_namespace() {
        let binding = binding(&MINIMAL.replace("{name: db}", "{name: db, namespace: db}"));
        assert_eq!(binding.spec.cluster_namespace("shop"), "db");
        assert!(binding.spec.is_cross_namespace("shop"));
        let same = self::binding(&MINIMAL.replace("{name: db}", "{name: db, namespace: shop}"));
        assert!(!same.spec.is_cross_namespace("shop"));
    }

    #[test]
    fn pooler_is_optional_and_named_in_the_clusters_namespace() {
        assert_eq!(binding(MINIMAL).spec.pooler_name(), None);
        let pooled = binding(&format!("{MINIMAL}  pooler: {{name: db-pooler}}\n"));
        assert_eq!(pooled.spec.pooler_name(), Some("db-pooler"));
        let yaml = serde_yaml_ng::to_string(&binding(MINIMAL).spec).unwrap();
        assert!(!yaml.contains("pooler"), "{yaml}");
    }

    #[test]
    fn cel_lets_the_pooler_be_added_changed_and_removed() {
        let pooled = format!("{MINIMAL}  pooler: {{name: db-pooler}}\n");
        let other = format!("{MINIMAL}  pooler: {{name: other-pooler}}\n");
        assert!(cel_errors::<ServiceBinding>(&pooled, Some(MINIMAL)).is_empty());
        assert!(cel_errors::<ServiceBinding>(&other, Some(&pooled)).is_empty());
        assert!(cel_errors::<ServiceBinding>(MINIMAL, Some(&pooled)).is_empty());
    }

    #[test]
    fn secret_layout_has_the_servicebinding_keys() {
        assert_eq!(secret::SECRET_TYPE, "servicebinding.io/postgresql");
        assert!(secret::KEYS.contains(&"jdbc-url") && secret::KEYS.contains(&"ca.crt"));
        let mut keys = secret::KEYS.to_vec();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), secret::KEYS.len());
    }

    #[test]
    fn cel_keeps_cluster_and_secret_fixed_but_lets_access_change() {
        assert!(cel_errors::<ServiceBinding>(MINIMAL, None).is_empty());
        let moved = MINIMAL.replace("{name: db}", "{name: db, namespace: db}");
        assert!(cel_errors::<ServiceBinding>(&moved, Some(MINIMAL))[0].contains("spec.cluster"));
        let renamed = format!("{MINIMAL}  secretName: other\n");
        assert!(cel_errors::<ServiceBinding>(&renamed, Some(MINIMAL))[0].contains("secretName"));
        let read_only = format!("{MINIMAL}  access: ReadOnly\n");
        assert!(cel_errors::<ServiceBinding>(&read_only, Some(MINIMAL)).is_empty());
    }

    #[test]
    fn cel_refuses_names_too_long_for_a_label() {
        let long = MINIMAL.replace("name: orders", &format!("name: {}", "o".repeat(64)));
        assert!(cel_errors::<ServiceBinding>(&long, None)[0].contains("63 characters"));
    }

    #[test]
    fn documented_example_is_valid() {
        for example in [
            include_str!("../../../docs/examples/servicebinding.yaml"),
            include_str!("../../../docs/examples/servicebinding-cross-namespace.yaml"),
            include_str!("../../../docs/examples/servicebinding-pooler.yaml"),
        ] {
            let object: ServiceBinding = serde_yaml_ng::from_str(example).unwrap();
            assert!(object.metadata.namespace.is_some());
            let errors = cel_errors::<ServiceBinding>(example, None);
            assert!(errors.is_empty(), "{errors:?}");
        }
    }
}

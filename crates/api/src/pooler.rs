//! The `Pooler` resource: PgBouncer in front of a Cluster, as its own Deployment and Service.
//!
//! ```text
//!   Pooler <p> ──(spec.cluster)──► Cluster <c>         (same namespace, by reference)
//!     ├── Deployment <p>   PgBouncer, spec.instances pods, anti-affinity
//!     ├── Service <p>      clients: <p>.<ns>.svc:5432, TLS from the Cluster's CA
//!     ├── ConfigMap <p>    pgbouncer.ini (a change is reloaded, not restarted)
//!     └── PDB <p>          one pod down at a time
//!   PgBouncer ──TLS verify-full──► <c>-rw (ReadWrite) or <c>-ro (ReadOnly)
//!             └─ auth_query through role tusk_pooler's SECURITY DEFINER lookup
//! ```
//!
//! The Pooler is not owned by its Cluster (deleting a Cluster does not delete the Poolers in
//! front of it); it waits for the Cluster to be Ready, like a PostgresUser.
//!
//! The conditions a user reads are `Ready`, `Progressing` and `Degraded`, with the reasons in
//! [`reasons`]; docs/operations/pooling.md explains each.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::ClusterReference;
use crate::condition::Condition;

/// PgBouncer parameters tusk sets itself: where it listens, how it authenticates clients and
/// servers, TLS on both sides, the admin and stats users, and the files it reads. Setting one
/// in `spec.pgbouncer.parameters` is refused by the schema.
pub const FORBIDDEN_PARAMETERS: &[&str] = &[
    "listen_addr",
    "listen_port",
    "unix_socket_dir",
    "unix_socket_mode",
    "unix_socket_group",
    "auth_type",
    "auth_file",
    "auth_hba_file",
    "auth_user",
    "auth_query",
    "auth_dbname",
    "admin_users",
    "stats_users",
    "pidfile",
    "logfile",
    "syslog",
    "user",
    "conffile",
    "client_tls_sslmode",
    "client_tls_key_file",
    "client_tls_cert_file",
    "client_tls_ca_file",
    "client_tls_protocols",
    "client_tls_ciphers",
    "server_tls_sslmode",
    "server_tls_key_file",
    "server_tls_cert_file",
    "server_tls_ca_file",
    "server_tls_protocols",
    "server_tls_ciphers",
    "pool_mode",
    "default_pool_size",
    "max_client_conn",
    "max_db_connections",
    "reserve_pool_size",
    "server_idle_timeout",
    "query_timeout",
    "idle_transaction_timeout",
];

/// The most extra PgBouncer parameters a Pooler may set.
pub const MAX_EXTRA_PARAMETERS: usize = 32;

/// PgBouncer in front of a Cluster: a Deployment of `instances` pods behind the Service
/// `<name>`, clients authenticated through the Cluster's own roles.
// Every `printcolumn(...)` repeats `type_ = ...`, which clippy takes for a duplicate.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "tusk.dev",
    version = "v1alpha1",
    kind = "Pooler",
    plural = "poolers",
    namespaced,
    status = "PoolerStatus",
    category = "tusk",
    shortname = "pgpooler",
    doc = "PgBouncer in front of a Cluster: a Deployment behind the Service <name>, TLS on both \
           sides, clients authenticated with the Cluster's roles through auth_query.",
    printcolumn(
        name = "Cluster",
        type_ = "string",
        json_path = ".spec.cluster.name",
        description = "The Cluster pooled"
    ),
    printcolumn(
        name = "Target",
        type_ = "string",
        json_path = ".spec.target",
        description = "ReadWrite (the primary) or ReadOnly (the replicas)"
    ),
    printcolumn(
        name = "Mode",
        type_ = "string",
        json_path = ".spec.pgbouncer.poolMode",
        description = "PgBouncer's pool mode"
    ),
    printcolumn(
        name = "Ready",
        type_ = "integer",
        json_path = ".status.readyInstances",
        description = "PgBouncer pods ready"
    ),
    printcolumn(
        name = "Status",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        description = "Why the Pooler is or is not Ready"
    ),
    printcolumn(
        name = "Service",
        type_ = "string",
        json_path = ".status.service",
        description = "Where clients connect",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct PoolerSpec {
    /// The Cluster, in this namespace, to pool connections to.
    pub cluster: ClusterReference,

    /// ReadWrite (the default): the primary, through `<cluster>-rw`, so the pooler follows a
    /// failover. ReadOnly: the replicas, through `<cluster>-ro`.
    #[serde(default)]
    pub target: PoolerTarget,

    /// How many PgBouncer pods, 1 to 16 (default 2), spread over nodes where possible.
    #[serde(default = "default_instances")]
    #[schemars(range(min = 1, max = 16))]
    pub instances: i32,

    /// PgBouncer's settings.
    #[serde(default)]
    pub pgbouncer: PgBouncerSettings,

    /// CPU and memory of the PgBouncer container. Default: requests 50m CPU and 32Mi memory,
    /// limit 256Mi memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Stop handing out server connections (PgBouncer `PAUSE`): clients wait, queries in
    /// flight finish; `false` resumes. Default false.
    #[serde(default)]
    pub paused: bool,
}

fn default_instances() -> i32 {
    2
}

/// Which instances of the Cluster the pooler connects to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PoolerTarget {
    /// The primary (`<cluster>-rw`).
    #[default]
    ReadWrite,
    /// The replicas (`<cluster>-ro`).
    ReadOnly,
}

/// PgBouncer's pool mode: when a server connection goes back to the pool.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PoolMode {
    /// When the client disconnects. Everything PostgreSQL offers works; the pool saves only
    /// the connection set-up.
    #[default]
    Session,
    /// When the transaction ends. Many clients share few server connections; session state
    /// (SET, advisory locks, LISTEN, WITH HOLD cursors, prepared statements before PgBouncer
    /// 1.21) does not survive between transactions.
    Transaction,
    /// After every statement; multi-statement transactions are refused.
    Statement,
}

impl PoolMode {
    /// The value of PgBouncer's `pool_mode`.
    pub fn as_pgbouncer(self) -> &'static str {
        match self {
            PoolMode::Session => "session",
            PoolMode::Transaction => "transaction",
            PoolMode::Statement => "statement",
        }
    }
}

/// PgBouncer's settings. Every field has a default that is safe for a first deployment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "self.maxDbConnections == 0 || self.defaultPoolSize <= self.maxDbConnections",
        "message": "spec.pgbouncer.defaultPoolSize is larger than maxDbConnections, so the pools could never fill: raise maxDbConnections or lower defaultPoolSize"
    }
]))]
pub struct PgBouncerSettings {
    /// Session (the default), Transaction or Statement; see docs/operations/pooling.md.
    #[serde(default)]
    pub pool_mode: PoolMode,

    /// Server connections per database and user pair, 1 to 10000. Default 20.
    #[serde(default = "default_pool_size")]
    #[schemars(range(min = 1, max = 10_000))]
    pub default_pool_size: i32,

    /// Extra server connections a pool may open when a client has waited
    /// `reserve_pool_timeout` (5 s), 0 to 1000. Default 0.
    #[serde(default)]
    #[schemars(range(min = 0, max = 1000))]
    pub reserve_pool_size: i32,

    /// Client connections each PgBouncer pod accepts, 1 to 100000. Default 1000.
    #[serde(default = "default_max_client_connections")]
    #[schemars(range(min = 1, max = 100_000))]
    pub max_client_connections: i32,

    /// Server connections per database across all its pools, 0 (no limit, the default) to
    /// 10000. Keep pods × this under the Cluster's `max_connections`.
    #[serde(default)]
    #[schemars(range(min = 0, max = 10_000))]
    pub max_db_connections: i32,

    /// Seconds an idle server connection stays open, 0 (forever) to 86400. Default 600.
    #[serde(default = "default_server_idle_timeout")]
    #[schemars(range(min = 0, max = 86_400))]
    pub server_idle_timeout_seconds: i32,

    /// Seconds a query may run before PgBouncer cancels it, 0 (no limit, the default) to
    /// 86400. Prefer PostgreSQL's `statement_timeout`; this is the backstop.
    #[serde(default)]
    #[schemars(range(min = 0, max = 86_400))]
    pub query_timeout_seconds: i32,

    /// Seconds a client may sit idle inside a transaction before PgBouncer closes it, 0 (no
    /// limit, the default) to 86400.
    #[serde(default)]
    #[schemars(range(min = 0, max = 86_400))]
    pub idle_transaction_timeout_seconds: i32,

    /// Further PgBouncer settings for the `[pgbouncer]` section (at most 32), for example
    /// `server_lifetime: "3600"` or `ignore_startup_parameters: extra_float_digits`. Names are
    /// PgBouncer's, lowercase; what tusk controls (listening, authentication, TLS, admin
    /// users, files and the fields above) is refused.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "parameters_schema")]
    pub parameters: BTreeMap<String, String>,
}

impl Default for PgBouncerSettings {
    fn default() -> Self {
        PgBouncerSettings {
            pool_mode: PoolMode::default(),
            default_pool_size: default_pool_size(),
            reserve_pool_size: 0,
            max_client_connections: default_max_client_connections(),
            max_db_connections: 0,
            server_idle_timeout_seconds: default_server_idle_timeout(),
            query_timeout_seconds: 0,
            idle_transaction_timeout_seconds: 0,
            parameters: BTreeMap::new(),
        }
    }
}

impl PgBouncerSettings {
    /// The parameters in `parameters` that tusk controls, sorted (the schema refuses them;
    /// this catches objects stored before it did).
    pub fn forbidden_parameters(&self) -> Vec<&str> {
        self.parameters
            .keys()
            .map(String::as_str)
            .filter(|name| FORBIDDEN_PARAMETERS.contains(name))
            .collect()
    }
}

fn default_pool_size() -> i32 {
    20
}

fn default_max_client_connections() -> i32 {
    1000
}

fn default_server_idle_timeout() -> i32 {
    600
}

/// A PgBouncer setting name: lowercase letters, digits and underscores.
pub const PARAMETER_NAME_PATTERN: &str = "^[a-z][a-z0-9_]*$";

fn parameters_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let forbidden = FORBIDDEN_PARAMETERS
        .iter()
        .map(|name| format!("'{name}'"))
        .collect::<Vec<_>>()
        .join(", ");
    schemars::json_schema!({
        "type": "object",
        "maxProperties": MAX_EXTRA_PARAMETERS,
        "additionalProperties": {
            "type": "string",
            "maxLength": 1024,
            "x-kubernetes-validations": [{
                "rule": "!self.contains('\\n') && !self.contains('\\r')",
                "message": "a PgBouncer setting's value is one line",
            }],
        },
        "x-kubernetes-validations": [
            {
                "rule": format!("self.all(k, k.size() <= 64 && k.matches('{PARAMETER_NAME_PATTERN}'))"),
                "message": "spec.pgbouncer.parameters names are PgBouncer's: lowercase letters, digits and underscores, at most 64 characters",
            },
            {
                "rule": format!("self.all(k, !(k in [{forbidden}]))"),
                "message": "spec.pgbouncer.parameters sets something tusk controls (listening, authentication, TLS, admin users, files, or a setting with its own field such as poolMode): remove it or use the field",
            },
        ],
    })
}

/// Condition reasons of a Pooler (also the controller's metric labels).
pub mod reasons {
    /// Ready: every pod is ready, runs the current spec and has its settings applied.
    pub const AVAILABLE: &str = "Available";
    /// The Cluster named in `spec.cluster` does not exist in the Pooler's namespace.
    pub const CLUSTER_NOT_FOUND: &str = "ClusterNotFound";
    /// The Cluster is not Ready (yet, or any more); PgBouncer keeps running when it was.
    pub const CLUSTER_NOT_READY: &str = "ClusterNotReady";
    /// The Cluster's primary or its Secrets cannot be reached.
    pub const CLUSTER_UNREACHABLE: &str = "ClusterUnreachable";
    /// PostgreSQL refused the auth role or lookup function statements.
    pub const SQL_FAILED: &str = "SqlFailed";
    /// The spec cannot be applied as written; the message says what to change.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// An object the Pooler would create exists and belongs to something else.
    pub const NAME_CONFLICT: &str = "NameConflict";
    /// The Cluster's CA cannot issue the Pooler's certificate (no `ca.key`, unreadable).
    pub const CERTIFICATE_UNAVAILABLE: &str = "CertificateUnavailable";
    /// The Kubernetes API refused or failed a call.
    pub const KUBERNETES_API_ERROR: &str = "KubernetesApiError";
    /// Progressing: the Deployment is rolling out new pods (image, resources, certificate).
    pub const ROLLING_OUT: &str = "RollingOut";
    /// Progressing: a pod does not run the current settings yet (reload under way).
    pub const RELOAD_PENDING: &str = "ReloadPending";
    /// Progressing: `PAUSE` sent, PgBouncer waits for server connections in use to finish.
    pub const PAUSING: &str = "Pausing";
    /// Ready is False: `spec.paused` is true and every pod holds new queries.
    pub const PAUSED: &str = "Paused";
    /// Degraded: fewer pods ready than `spec.instances`.
    pub const INSTANCES_UNAVAILABLE: &str = "InstancesUnavailable";
    /// Progressing False / Degraded False: nothing under way, nothing missing.
    pub const AS_EXPECTED: &str = "AsExpected";
}

/// What the Pooler controller observed and did.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PoolerStatus {
    /// `Ready` (every pod ready and the Cluster Ready), `Progressing` (a rollout or reload
    /// under way) and `Degraded` (fewer pods ready than asked for, or the Cluster not Ready).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::schema::conditions")]
    pub conditions: Vec<Condition>,

    /// The generation the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// PgBouncer pods ready.
    #[serde(default)]
    pub ready_instances: i32,

    /// Where clients connect: `<pooler>.<namespace>.svc:5432`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 300))]
    pub service: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minimal_pooler_gets_safe_defaults() {
        let pooler: Pooler = serde_yaml_ng::from_str(
            "apiVersion: tusk.dev/v1alpha1
kind: Pooler
metadata: {name: db-pooler, namespace: shop}
spec:
  cluster: {name: db}
",
        )
        .unwrap();
        let spec = &pooler.spec;
        assert_eq!(spec.target, PoolerTarget::ReadWrite);
        assert_eq!(spec.instances, 2);
        assert!(!spec.paused);
        let pgbouncer = &spec.pgbouncer;
        assert_eq!(pgbouncer.pool_mode, PoolMode::Session);
        assert_eq!(pgbouncer.default_pool_size, 20);
        assert_eq!(pgbouncer.max_client_connections, 1000);
        assert_eq!(pgbouncer.max_db_connections, 0);
        assert_eq!(pgbouncer.server_idle_timeout_seconds, 600);
        assert_eq!(pgbouncer.query_timeout_seconds, 0);
    }

    #[test]
    fn every_field_with_its_own_setting_is_forbidden_as_a_parameter() {
        for name in [
            "pool_mode",
            "default_pool_size",
            "reserve_pool_size",
            "max_client_conn",
            "max_db_connections",
            "server_idle_timeout",
            "query_timeout",
            "idle_transaction_timeout",
        ] {
            assert!(FORBIDDEN_PARAMETERS.contains(&name), "{name}");
        }
        let settings = PgBouncerSettings {
            parameters: BTreeMap::from([
                ("auth_type".to_owned(), "trust".to_owned()),
                ("server_lifetime".to_owned(), "3600".to_owned()),
            ]),
            ..PgBouncerSettings::default()
        };
        assert_eq!(settings.forbidden_parameters(), ["auth_type"]);
    }
}

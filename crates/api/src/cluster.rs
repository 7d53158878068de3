//! The `Cluster` resource: a highly available PostgreSQL cluster run by Patroni.
//!
//! A Cluster owns one StatefulSet per instance, the `-rw`/`-ro`/`-r` Services, the Patroni
//! configuration, the TLS and credential Secrets, and the RBAC Patroni needs. Other resources
//! chain on its `Ready` condition.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, LocalObjectReference, ResourceRequirements, Toleration, TopologySpreadConstraint,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use kube::CustomResource;
use kube::core::Rule;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

use crate::common::{SecretKeyReference, SecretReference, default_true};
use crate::condition::Condition;

/// PostgreSQL parameters tusk sets itself. A Cluster that sets one is rejected (CEL on
/// `spec.postgresql.parameters`, and a `Ready=False` condition should one slip through), because
/// changing them would break replication, TLS, archiving or the pod layout.
pub const FORBIDDEN_PARAMETERS: &[&str] = &[
    "archive_command",
    "archive_mode",
    "cluster_name",
    "config_file",
    "data_directory",
    "hba_file",
    "hot_standby",
    "ident_file",
    "listen_addresses",
    "port",
    "primary_conninfo",
    "primary_slot_name",
    "promote_trigger_file",
    "recovery_target",
    "recovery_target_lsn",
    "recovery_target_name",
    "recovery_target_time",
    "recovery_target_timeline",
    "recovery_target_xid",
    "restore_command",
    "ssl",
    "ssl_ca_file",
    "ssl_cert_file",
    "ssl_key_file",
    "synchronous_standby_names",
    "unix_socket_directories",
    "wal_level",
    "wal_log_hints",
];

/// A PostgreSQL cluster: one primary and zero or more streaming replicas, managed by Patroni.
// kube-derive takes one `printcolumn(...)` per column.
#[allow(clippy::duplicated_attributes)]
// `Default` exists for tests and builders; a real Cluster always comes from the API server
// with the schema defaults applied.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "tusk.dev",
    version = "v1alpha1",
    kind = "Cluster",
    derive = "Default",
    plural = "clusters",
    namespaced,
    status = "ClusterStatus",
    category = "tusk",
    shortname = "pgc",
    shortname = "pgcluster",
    validation = metadata_name_length_rule(),
    validation = Rule::new(
        "!has(self.spec.bootstrap) || !has(self.spec.bootstrap.restore) || !has(self.spec.bootstrap.restore.cluster) || self.spec.bootstrap.restore.cluster != self.metadata.name"
    )
    .message("spec.bootstrap.restore.cluster names this Cluster itself: restore from another Cluster's repository"),
    doc = "A highly available PostgreSQL cluster: a primary and streaming replicas run by Patroni, \
           with TLS, backups through pgBackRest and Services for read-write and read-only traffic.",
    printcolumn(
        name = "Version",
        type_ = "integer",
        json_path = ".spec.postgresVersion",
        description = "PostgreSQL major version asked for"
    ),
    printcolumn(
        name = "Instances",
        type_ = "integer",
        json_path = ".spec.instances",
        description = "Instances asked for"
    ),
    printcolumn(
        name = "Ready",
        type_ = "integer",
        json_path = ".status.readyInstances",
        description = "Instances running and ready"
    ),
    printcolumn(
        name = "Primary",
        type_ = "string",
        json_path = ".status.currentPrimary",
        description = "The instance currently primary"
    ),
    printcolumn(
        name = "Status",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        description = "Reason of the Ready condition"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "self.replication.mode == 'Asynchronous' || self.instances > self.replication.synchronousNodeCount",
        "message": "synchronous replication needs more instances than spec.replication.synchronousNodeCount: raise spec.instances or lower synchronousNodeCount"
    },
    {
        "rule": "has(self.bootstrap) == has(oldSelf.bootstrap)",
        "message": "spec.bootstrap cannot be added or removed after the Cluster is created"
    },
    {
        "rule": "has(self.walStorage) == has(oldSelf.walStorage)",
        "message": "spec.walStorage cannot be added or removed after the Cluster is created: it decides where pg_wal lives"
    },
    {
        "rule": "self.postgresVersion >= oldSelf.postgresVersion",
        "message": "spec.postgresVersion cannot go down: PostgreSQL data cannot be downgraded to an older major"
    }
]))]
#[serde(rename_all = "camelCase")]
pub struct ClusterSpec {
    /// PostgreSQL major version to run, 15 to 18. Changing it on a running Cluster is refused:
    /// major upgrades go through a PGUpgrade, which sets this field itself when it is done.
    #[schemars(range(min = 15, max = 18))]
    pub postgres_version: i32,

    /// Instance image holding PostgreSQL, Patroni and pgBackRest (see images/postgres). Default:
    /// the image the operator is configured with for `postgresVersion`. Changing it rolls the
    /// instances one at a time, replicas first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,

    /// When to pull the image: Always, IfNotPresent or Never. Default: Kubernetes' default for the
    /// image tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "image_pull_policy_schema")]
    pub image_pull_policy: Option<ImagePullPolicy>,

    /// Secrets for pulling the image from a private registry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub image_pull_secrets: Vec<LocalObjectReference>,

    /// Number of PostgreSQL instances: one primary plus `instances - 1` streaming replicas.
    /// At least 1, at most 16; use 3 for high availability. Scaling down removes the highest
    /// numbered replicas first and never the primary.
    #[serde(default = "default_instances")]
    #[schemars(range(min = 1, max = 16))]
    pub instances: i32,

    /// CPU and memory requests and limits of the `postgres` container. Changing them rolls the
    /// instances, replicas first, then a switchover, then the old primary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// The data volume of every instance.
    pub storage: StorageSpec,

    /// A separate volume for the write-ahead log (pg_wal). Default: WAL lives on the data volume.
    /// Cannot be added to or removed from an existing Cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal_storage: Option<VolumeSpec>,

    /// PostgreSQL configuration: parameters and pg_hba additions.
    #[serde(default)]
    pub postgresql: PostgresConfig,

    /// Replication between the primary and the replicas.
    #[serde(default)]
    pub replication: ReplicationSpec,

    /// Patroni's failure-detection timing. The defaults fail over within about 10 seconds of
    /// a primary's loss; see docs/operations/high-availability.md for the trade-off.
    #[serde(default)]
    pub high_availability: HighAvailabilitySpec,

    /// Where instance pods run: anti-affinity, zone spread, node selection and tolerations.
    #[serde(default)]
    pub scheduling: SchedulingSpec,

    /// TLS for client and replication connections. Always on: certificates are generated by tusk
    /// from a per-cluster CA unless Secrets are given here.
    #[serde(default)]
    pub tls: TlsSpec,

    /// Backup repositories for pgBackRest. With at least one repository, WAL archiving is on and
    /// Backup, BackupSchedule and point-in-time recovery become available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupConfiguration>,

    /// How the Cluster's data is created: a new empty database (initdb, the default) or a
    /// restore from a backup repository. Cannot be changed after creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self == oldSelf", "message": "spec.bootstrap cannot be changed after the Cluster is created"}
    ]))]
    pub bootstrap: Option<BootstrapSpec>,

    /// Which namespaces may create ServiceBindings to this Cluster. Default: only the Cluster's
    /// own namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binding_policy: Option<BindingPolicy>,

    /// The Prometheus exporter sidecar (postgres_exporter on port 9187).
    #[serde(default)]
    pub monitoring: MonitoringSpec,

    /// Stop every instance (replicas first, the primary last) and keep the volumes. Setting it
    /// back to false starts them again with their data.
    #[serde(default)]
    pub shutdown: bool,

    /// Labels and annotations added to every instance pod (for example for a service mesh or
    /// cost allocation). Keys tusk sets itself are ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_metadata: Option<InstanceMetadata>,

    /// PriorityClass of the instance pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub priority_class_name: Option<String>,
}

fn image_pull_policy_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "string", "enum": ["Always", "IfNotPresent", "Never"]})
}

fn metadata_name_length_rule() -> Rule {
    Rule::new(format!("self.metadata.name.size() <= {}", crate::names::MAX_CLUSTER_NAME_LENGTH)).message(
        format!(
            "a Cluster name may have at most {} characters, so that the names of its instances, Services and pods stay valid",
            crate::names::MAX_CLUSTER_NAME_LENGTH
        )
        .as_str(),
    )
}

fn default_instances() -> i32 {
    1
}

/// When the kubelet pulls the instance image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ImagePullPolicy {
    Always,
    IfNotPresent,
    Never,
}

/// A persistent volume for each instance.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "quantity(self.size).compareTo(quantity(oldSelf.size)) >= 0",
        "message": "a volume's size cannot shrink: PersistentVolumeClaims can only grow"
    },
    {
        "rule": "(has(self.storageClassName) == has(oldSelf.storageClassName)) && (!has(self.storageClassName) || self.storageClassName == oldSelf.storageClassName)",
        "message": "a volume's storageClassName cannot be changed after creation"
    }
]))]
pub struct VolumeSpec {
    /// Size of the volume, as a Kubernetes quantity (for example `10Gi`). It can grow (if the
    /// StorageClass allows expansion) but never shrink.
    #[schemars(schema_with = "crate::schema::quantity")]
    pub size: Quantity,

    /// StorageClass of the volume. Default: the cluster's default StorageClass. Cannot be changed
    /// after creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub storage_class_name: Option<String>,
}

/// The data volume of every instance, and how it grows.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "quantity(self.size).compareTo(quantity(oldSelf.size)) >= 0",
        "message": "spec.storage.size cannot shrink: PersistentVolumeClaims can only grow"
    },
    {
        "rule": "!has(self.autoGrow) || quantity(self.autoGrow.limit).compareTo(quantity(self.size)) >= 0",
        "message": "spec.storage.autoGrow.limit must be at least spec.storage.size"
    },
    {
        "rule": "(has(self.storageClassName) == has(oldSelf.storageClassName)) && (!has(self.storageClassName) || self.storageClassName == oldSelf.storageClassName)",
        "message": "spec.storage.storageClassName cannot be changed after creation"
    }
]))]
pub struct StorageSpec {
    /// Size of each instance's data volume, as a Kubernetes quantity (for example `10Gi`). It can
    /// grow (if the StorageClass allows expansion) but never shrink.
    #[schemars(schema_with = "crate::schema::quantity")]
    pub size: Quantity,

    /// StorageClass of the data volumes. Default: the cluster's default StorageClass. Cannot be
    /// changed after creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub storage_class_name: Option<String>,

    /// Grow the data volumes automatically when they fill up. Off unless set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_grow: Option<AutoGrowSpec>,
}

/// Automatic expansion of the data volumes, without a restart.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AutoGrowSpec {
    /// Usage of the data volume, in percent, past which it is expanded. 50 to 99, default 80.
    #[serde(default = "default_threshold_percent")]
    #[schemars(range(min = 50, max = 99))]
    pub threshold_percent: i32,

    /// How much to grow by each time, in percent of the current size. 10 to 100, default 25.
    #[serde(default = "default_increase_percent")]
    #[schemars(range(min = 10, max = 100))]
    pub increase_percent: i32,

    /// The largest size the volume may be grown to, as a Kubernetes quantity (for example
    /// `100Gi`). When reached, the Cluster reports it and stops growing.
    #[schemars(schema_with = "crate::schema::quantity")]
    pub limit: Quantity,
}

fn default_threshold_percent() -> i32 {
    80
}

fn default_increase_percent() -> i32 {
    25
}

/// PostgreSQL configuration.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostgresConfig {
    /// PostgreSQL parameters (postgresql.conf), merged over tusk's defaults. Values are strings,
    /// as in postgresql.conf (`"256MB"`, `"on"`, `"200"`). Parameters that tusk controls
    /// (listen_addresses, port, ssl*, wal_level, hot_standby, archive_*, restore_command,
    /// recovery_*, primary_*, data_directory, hba_file, ...) are refused. Parameters that need a
    /// restart roll the instances; the others are reloaded without one.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "parameters_schema")]
    pub parameters: BTreeMap<String, String>,

    /// Lines added to pg_hba.conf after tusk's own rules and before the final reject, for
    /// example `hostssl app app 10.0.0.0/8 scram-sha-256`. Only `hostssl` lines with
    /// `scram-sha-256` or `cert` are accepted for network connections.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "pg_hba_schema")]
    pub pg_hba: Vec<String>,
}

fn parameters_schema(_: &mut SchemaGenerator) -> Schema {
    let forbidden = FORBIDDEN_PARAMETERS
        .iter()
        .map(|name| format!("'{name}'"))
        .collect::<Vec<_>>()
        .join(", ");
    json_schema!({
        "type": "object",
        "maxProperties": 200,
        "additionalProperties": {"type": "string", "maxLength": 4096},
        "x-kubernetes-validations": [
            {
                "rule": format!("self.all(name, !(name in [{forbidden}]))"),
                "message": "spec.postgresql.parameters sets a parameter tusk controls (connection, TLS, replication, archiving or recovery settings); remove it",
            },
            {
                "rule": "self.all(name, name.matches('^[a-z][a-z0-9_.]{0,62}$'))",
                "message": "spec.postgresql.parameters names must be lowercase PostgreSQL parameter names such as max_connections or pg_stat_statements.track",
            },
        ],
    })
}

fn pg_hba_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "maxItems": 64,
        "items": {"type": "string", "minLength": 1, "maxLength": 512},
        "x-kubernetes-validations": [
            {
                "rule": "self.all(line, !line.contains('\\n') && line.matches('^(local|hostssl)\\\\s') && (line.matches('\\\\sscram-sha-256(\\\\s|$)') || line.matches('\\\\scert(\\\\s|$)') || line.matches('\\\\sreject(\\\\s|$)')))",
                "message": "spec.postgresql.pgHba lines must be `local` or `hostssl` with scram-sha-256, cert or reject: plain `host` and password-less methods are refused",
            },
        ],
    })
}

/// Replication between the primary and the replicas.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicationSpec {
    /// Asynchronous (default): commits do not wait for replicas; a failover can lose the last
    /// transactions. Synchronous: commits wait for `synchronousNodeCount` replicas, and Patroni
    /// only fails over to a synchronous replica, so no acknowledged commit is lost; when no
    /// replica can confirm, the primary falls back to asynchronous. SynchronousStrict: as
    /// Synchronous, but writes wait rather than fall back.
    #[serde(default)]
    pub mode: ReplicationMode,

    /// How many replicas must confirm each commit in the synchronous modes.
    /// Default 1.
    #[serde(default = "default_synchronous_node_count")]
    #[schemars(range(min = 1, max = 15))]
    pub synchronous_node_count: i32,
}

impl Default for ReplicationSpec {
    fn default() -> Self {
        Self {
            mode: ReplicationMode::default(),
            synchronous_node_count: default_synchronous_node_count(),
        }
    }
}

fn default_synchronous_node_count() -> i32 {
    1
}

/// Whether commits wait for replicas: Asynchronous, Synchronous (falls back to asynchronous
/// when no replica can confirm) or SynchronousStrict (never falls back; writes wait).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ReplicationMode {
    #[default]
    Asynchronous,
    Synchronous,
    SynchronousStrict,
}

/// Patroni's timing. Patroni requires `loopWaitSeconds + 2 * retryTimeoutSeconds <= ttlSeconds`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "self.loopWaitSeconds + 2 * self.retryTimeoutSeconds <= self.ttlSeconds",
        "message": "Patroni needs loopWaitSeconds + 2 * retryTimeoutSeconds <= ttlSeconds in spec.highAvailability"
    }
]))]
pub struct HighAvailabilitySpec {
    /// How long the leader lock lives without renewal before a replica may take over. Lower
    /// means faster failover and more risk of a needless one on a slow API server. Default 8 (measured failover ≈ 8.5 s).
    #[serde(default = "default_ttl")]
    #[schemars(range(min = 5, max = 300))]
    pub ttl_seconds: i32,

    /// Seconds between Patroni's health-check loops. Default 2.
    #[serde(default = "default_loop_wait")]
    #[schemars(range(min = 1, max = 60))]
    pub loop_wait_seconds: i32,

    /// How long Patroni retries the Kubernetes API and PostgreSQL before giving up the
    /// leadership. Default 3.
    #[serde(default = "default_retry_timeout")]
    #[schemars(range(min = 1, max = 120))]
    pub retry_timeout_seconds: i32,

    /// A replica lagging more than this many bytes behind is not promoted on failover.
    /// Default 1048576 (1 MiB).
    #[serde(default = "default_maximum_lag_on_failover")]
    #[schemars(range(min = 0))]
    pub maximum_lag_on_failover: i64,
}

impl Default for HighAvailabilitySpec {
    fn default() -> Self {
        Self {
            ttl_seconds: default_ttl(),
            loop_wait_seconds: default_loop_wait(),
            retry_timeout_seconds: default_retry_timeout(),
            maximum_lag_on_failover: default_maximum_lag_on_failover(),
        }
    }
}

fn default_ttl() -> i32 {
    8
}

fn default_loop_wait() -> i32 {
    2
}

fn default_retry_timeout() -> i32 {
    3
}

fn default_maximum_lag_on_failover() -> i64 {
    1_048_576
}

/// Where the instance pods run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SchedulingSpec {
    /// Keep instances of this Cluster on different nodes (or other topology domains).
    #[serde(default)]
    pub pod_anti_affinity: PodAntiAffinitySpec,

    /// Spread instances evenly across zones (`topology.kubernetes.io/zone`), tolerating a skew
    /// of one. Default false.
    #[serde(default)]
    pub spread_across_zones: bool,

    /// Node labels an instance pod's node must have.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 32, "additionalProperties" = {"type": "string", "maxLength": 63}))]
    pub node_selector: BTreeMap<String, String>,

    /// Tolerations of the instance pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub tolerations: Vec<Toleration>,

    /// Additional affinity rules, merged with the anti-affinity tusk generates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,

    /// Additional topology spread constraints. tusk fills in the label selector when it is
    /// left empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,
}

/// Anti-affinity between the instances of one Cluster.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodAntiAffinitySpec {
    /// Preferred (default): spread when possible, co-locate when not. Required: never put two
    /// instances in the same topology domain (pods stay Pending if there are too few nodes).
    /// Disabled: no anti-affinity.
    #[serde(default, rename = "type")]
    pub type_: AntiAffinityType,

    /// The node label that defines a topology domain. Default `kubernetes.io/hostname`.
    #[serde(default = "default_topology_key")]
    #[schemars(length(min = 1, max = 317))]
    pub topology_key: String,
}

impl Default for PodAntiAffinitySpec {
    fn default() -> Self {
        Self {
            type_: AntiAffinityType::default(),
            topology_key: default_topology_key(),
        }
    }
}

fn default_topology_key() -> String {
    "kubernetes.io/hostname".to_owned()
}

/// How strictly instances are kept apart: Preferred, Required or Disabled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum AntiAffinityType {
    #[default]
    Preferred,
    Required,
    Disabled,
}

/// TLS certificates. tusk keeps a CA per Cluster and issues the server certificate (with the
/// Services' DNS names) and pgBackRest's certificates from it, unless you bring your own.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "has(self.serverSecret) == has(self.caSecret)",
        "message": "spec.tls.serverSecret and spec.tls.caSecret go together: give both to bring your own certificates, or neither to let tusk generate them"
    }
]))]
pub struct TlsSpec {
    /// A Secret of type kubernetes.io/tls holding the server certificate (`tls.crt`,
    /// `tls.key`). Its SANs must include the `-rw`, `-ro` and `-r` Service names. Default:
    /// generated by tusk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_secret: Option<SecretReference>,

    /// A Secret holding the CA (`ca.crt`) that signed `serverSecret`; handed to clients in
    /// ServiceBinding Secrets. Default: generated by tusk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret: Option<SecretReference>,
}

/// Backup repositories and defaults for pgBackRest.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "has(self.encryption) == has(oldSelf.encryption) && (!has(self.encryption) || self.encryption == oldSelf.encryption)",
        "message": "spec.backup.encryption cannot be added, removed or changed: existing backups stay encrypted with the old passphrase; configure a new repository instead"
    }
]))]
pub struct BackupConfiguration {
    /// Repositories backups and WAL archives are written to, `repo1` to `repo4`, each name
    /// once. WAL is archived to every repository.
    #[schemars(length(min = 1, max = 4))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub repositories: Vec<Repository>,

    /// Compression of backups and archived WAL. Default zst at level 1 (see
    /// docs/operations/backup.md for the measurements behind it).
    #[serde(default)]
    pub compression: CompressionSpec,

    /// Encrypt the repositories with a passphrase (pgBackRest `aes-256-cbc`). The passphrase
    /// cannot be changed later without a new repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<EncryptionSpec>,

    /// Parallel processes for backup and restore. Default: derived from the CPU limit of the
    /// backup Job (at least 1, at most 4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 32))]
    pub process_max: Option<i32>,

    /// CPU and memory of backup Jobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_resources: Option<ResourceRequirements>,
}

/// One pgBackRest repository. Exactly one of `volume`, `s3`, `gcs` or `azure` is set.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "[has(self.volume), has(self.s3), has(self.gcs), has(self.azure)].filter(x, x).size() == 1",
        "message": "a repository needs exactly one of volume, s3, gcs or azure"
    }
]))]
pub struct Repository {
    /// Name of the repository: `repo1` to `repo4`. Backups name the repository they go to.
    #[schemars(length(min = 5, max = 5), regex(pattern = r"^repo[1-4]$"))]
    pub name: String,

    /// A PersistentVolumeClaim (pgBackRest `posix` repository), mounted by backup Jobs and the
    /// primary's pgBackRest server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<VolumeSpec>,

    /// Amazon S3 or an S3-compatible object store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Repository>,

    /// Google Cloud Storage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gcs: Option<GcsRepository>,

    /// Azure Blob Storage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure: Option<AzureRepository>,

    /// Path inside the repository. Default `/<namespace>/<cluster>`, so several Clusters can
    /// share a bucket without overwriting each other.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512), regex(pattern = r"^/"))]
    pub path: Option<String>,

    /// How many backups this repository keeps.
    #[serde(default)]
    pub retention: RetentionSpec,
}

/// An S3 or S3-compatible bucket.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3Repository {
    /// Bucket name.
    #[schemars(length(min = 3, max = 63))]
    pub bucket: String,

    /// Endpoint host (and optional port), for example `s3.eu-central-1.amazonaws.com` or
    /// `minio.storage.svc:9000`.
    #[schemars(length(min = 1, max = 253))]
    pub endpoint: String,

    /// Region, for example `eu-central-1`. S3-compatible stores usually accept any value.
    #[schemars(length(min = 1, max = 64))]
    pub region: String,

    /// Host (default: `bucket.endpoint`, as AWS) or Path (`endpoint/bucket`, as most
    /// S3-compatible stores).
    #[serde(default)]
    pub uri_style: S3UriStyle,

    /// A Secret with keys `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`. Leave unset to use the
    /// pod's identity (IRSA / EKS Pod Identity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<SecretReference>,

    /// The CA that signed the endpoint's certificate, for stores with a private CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<SecretKeyReference>,

    /// Verify the endpoint's TLS certificate. Default true; turn off only for testing.
    #[serde(default = "default_true")]
    pub verify_tls: bool,
}

/// How bucket URLs are formed: Host (`bucket.endpoint`) or Path (`endpoint/bucket`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum S3UriStyle {
    #[default]
    Host,
    Path,
}

/// A Google Cloud Storage bucket.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GcsRepository {
    /// Bucket name.
    #[schemars(length(min = 3, max = 222))]
    pub bucket: String,

    /// A Secret with key `key.json` holding a service account key. Leave unset to use Workload
    /// Identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<SecretReference>,
}

/// An Azure Blob Storage container.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AzureRepository {
    /// Container name.
    #[schemars(length(min = 3, max = 63))]
    pub container: String,

    /// A Secret with keys `AZURE_STORAGE_ACCOUNT` and `AZURE_STORAGE_KEY` (shared key) or
    /// `AZURE_STORAGE_SAS_TOKEN`.
    pub credentials_secret: SecretReference,

    /// Blob endpoint, for Azure clouds other than the public one. Default
    /// `blob.core.windows.net`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub endpoint: Option<String>,
}

/// How long a repository keeps backups. WAL needed by a kept backup is kept with it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetentionSpec {
    /// How many full backups to keep (Count, the default), or for how many days (Days).
    #[serde(default = "default_full_retention")]
    #[schemars(range(min = 1, max = 9999))]
    pub full: i32,

    /// Whether `full` counts backups or days.
    #[serde(default)]
    pub full_type: RetentionType,

    /// How many differential backups to keep. Default: as many as the full backups they
    /// depend on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 9999))]
    pub differential: Option<i32>,
}

impl Default for RetentionSpec {
    fn default() -> Self {
        Self {
            full: default_full_retention(),
            full_type: RetentionType::default(),
            differential: None,
        }
    }
}

fn default_full_retention() -> i32 {
    2
}

/// Whether retention counts backups (Count) or days (Days).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RetentionType {
    #[default]
    Count,
    Days,
}

/// Compression of backups and archived WAL.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CompressionSpec {
    /// zst (default), lz4, gz, bz2 or none.
    #[serde(default, rename = "type")]
    pub type_: CompressionType,

    /// Compression level; higher is smaller and slower. Default: 1 for zst and lz4, 6 for gz,
    /// 9 for bz2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = -5, max = 19))]
    pub level: Option<i32>,
}

/// pgBackRest compression: zst, lz4, gz, bz2 or none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum CompressionType {
    #[default]
    Zst,
    Lz4,
    Gz,
    Bz2,
    None,
}

/// Repository encryption.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EncryptionSpec {
    /// The Secret key holding the passphrase (pgBackRest `repo-cipher-pass`). Keep a copy
    /// outside the cluster: without it the backups cannot be read.
    pub passphrase_secret: SecretKeyReference,
}

/// How a new Cluster gets its data.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!(has(self.initdb) && has(self.restore))",
        "message": "spec.bootstrap takes either initdb or restore, not both"
    }
]))]
pub struct BootstrapSpec {
    /// Create a new, empty database cluster (the default when bootstrap is not given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initdb: Option<InitdbSpec>,

    /// Restore from a pgBackRest repository: the latest backup, or a point in time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<RestoreSpec>,
}

/// initdb settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InitdbSpec {
    /// Encoding of the template databases. Default UTF8.
    #[serde(default = "default_encoding")]
    #[schemars(length(min = 1, max = 32))]
    pub encoding: String,

    /// Locale of the template databases. Default `C.UTF-8`, which sorts by code point and never
    /// changes with an operating system upgrade.
    #[serde(default = "default_locale")]
    #[schemars(length(min = 1, max = 64))]
    pub locale: String,

    /// Page checksums, to detect storage corruption. Default true.
    #[serde(default = "default_true")]
    pub data_checksums: bool,
}

impl Default for InitdbSpec {
    fn default() -> Self {
        Self {
            encoding: default_encoding(),
            locale: default_locale(),
            data_checksums: true,
        }
    }
}

fn default_encoding() -> String {
    "UTF8".to_owned()
}

fn default_locale() -> String {
    "C.UTF-8".to_owned()
}

/// Restore a new Cluster from a backup repository.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "has(self.cluster) != has(self.repository)",
        "message": "spec.bootstrap.restore needs exactly one of cluster (restore from another Cluster's repository) or repository (an inline repository definition)"
    },
    {
        "rule": "!has(self.repository) || has(self.repository.path)",
        "message": "spec.bootstrap.restore.repository needs a path: the path the source Cluster's backups were written to (by default /<namespace>/<cluster>)"
    }
]))]
pub struct RestoreSpec {
    /// Restore from a repository of this Cluster (in the same namespace), which need not be
    /// running. Its repository configuration and encryption passphrase are used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "optional_dns_label")]
    pub cluster: Option<String>,

    /// Which of the source's repositories to restore from. Default `repo1`.
    #[serde(default = "default_repository_name")]
    #[schemars(length(min = 5, max = 5), regex(pattern = r"^repo[1-4]$"))]
    pub repository_name: String,

    /// An inline repository definition, for restoring backups of a Cluster that no longer
    /// exists (for example in another Kubernetes cluster). Its `path` must be set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<Repository>,

    /// The encryption passphrase of an inline repository, if it is encrypted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<EncryptionSpec>,

    /// A specific backup set to restore (pgBackRest label such as `20261122-101500F`).
    /// Default: the latest backup that can reach the target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 64),
        regex(pattern = r"^[0-9]{8}-[0-9]{6}F(_[0-9]{8}-[0-9]{6}[DI])?$")
    )]
    pub backup_set: Option<String>,

    /// Where recovery stops. Default: the end of the archived WAL (the latest state).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<RecoveryTarget>,
}

fn optional_dns_label(generator: &mut SchemaGenerator) -> Schema {
    crate::schema::dns_label(generator)
}

fn default_repository_name() -> String {
    "repo1".to_owned()
}

/// A point-in-time recovery target. Exactly one of `time`, `lsn` or `restorePoint`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "[has(self.time), has(self.lsn), has(self.restorePoint)].filter(x, x).size() == 1",
        "message": "a recovery target needs exactly one of time, lsn or restorePoint"
    }
]))]
pub struct RecoveryTarget {
    /// Recover up to this time, RFC 3339 with a zone (`2026-11-22T10:15:00Z`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "optional_rfc3339")]
    pub time: Option<String>,

    /// Recover up to this write-ahead log location (`0/3000028`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 3, max = 17),
        regex(pattern = r"^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$")
    )]
    pub lsn: Option<String>,

    /// Recover up to a restore point created with `pg_create_restore_point()`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub restore_point: Option<String>,

    /// Stop just before the target instead of just after it. Default false (inclusive).
    #[serde(default)]
    pub exclusive: bool,
}

fn optional_rfc3339(generator: &mut SchemaGenerator) -> Schema {
    crate::schema::rfc3339(generator)
}

/// Which other namespaces may bind to this Cluster. A namespace is admitted when it is listed
/// by name or matches the selector.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BindingPolicy {
    /// Namespaces admitted by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::schema::dns_label_set")]
    pub namespaces: Vec<String>,

    /// Namespaces admitted by their labels. An empty selector (`{}`) admits every namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
}

/// The metrics exporter sidecar.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MonitoringSpec {
    /// Run postgres_exporter next to each instance, with tusk's queries (replication lag,
    /// archiving, connections, sizes, transaction ID age, backup age). Default true.
    #[serde(default = "default_true")]
    pub enabled: bool,

    /// Exporter image. Default: the one the operator is configured with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,

    /// A ConfigMap with extra queries in postgres_exporter's format (key `queries.yaml`),
    /// added to tusk's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_queries: Option<crate::common::ConfigMapKeyReference>,
}

impl Default for MonitoringSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            image: None,
            custom_queries: None,
        }
    }
}

/// Extra metadata for instance pods.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceMetadata {
    /// Labels added to every instance pod. Keys under `tusk.dev/` and `app.kubernetes.io/`
    /// are tusk's own and refused.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend(
        "maxProperties" = 32,
        "additionalProperties" = {
            "type": "string",
            "maxLength": 63,
            "pattern": "^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
        },
        "x-kubernetes-validations" = [{
            "rule": "self.all(k, !k.startsWith('tusk.dev/') && !k.startsWith('app.kubernetes.io/'))",
            "message": "spec.instanceMetadata.labels may not set tusk.dev/ or app.kubernetes.io/ labels: tusk sets those itself"
        }]
    ))]
    pub labels: BTreeMap<String, String>,

    /// Annotations added to every instance pod.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 32, "additionalProperties" = {"type": "string", "maxLength": 4096}))]
    pub annotations: BTreeMap<String, String>,
}

/// What the Cluster controller observed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    /// `Ready` (all instances running and the primary accepting writes), `Progressing` (a
    /// rollout or scaling is under way; the message says which step), `Degraded` (fewer
    /// healthy instances than asked for), `ContinuousArchiving` (WAL archiving health, when a
    /// repository is configured).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::schema::conditions")]
    pub conditions: Vec<Condition>,

    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Each instance, with its role and readiness.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub instances: Vec<InstanceStatus>,

    /// How many instances are running and ready.
    #[serde(default)]
    pub ready_instances: i32,

    /// The instance Patroni currently holds as leader.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub current_primary: Option<String>,

    /// The PostgreSQL major version the instances are running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres_version: Option<i32>,

    /// The image the instances are running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub image: Option<String>,

    /// Where clients connect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<ClusterEndpoints>,

    /// Volume usage per instance, as last measured.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub storage: Vec<VolumeUsage>,

    /// PostgreSQL's system identifier (from pg_controldata), which ties backups and replicas to
    /// this cluster's data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub system_identifier: Option<String>,

    /// The point-in-time recovery target reached when the Cluster was restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub recovery_target_reached: Option<String>,

    /// When the last switchover or failover happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_primary_change: Option<Time>,

    /// The last value of the `tusk.dev/restart` annotation whose rolling restart finished:
    /// every instance restarted after it was set and is ready again (values longer than 128
    /// characters are recorded by hash).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub restart_request: Option<String>,
}

/// One PostgreSQL instance.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceStatus {
    /// Instance name, `<cluster>-<n>`.
    #[schemars(length(max = 63))]
    pub name: String,

    /// Primary, Replica, Stopped or Unknown.
    pub role: InstanceRole,

    /// Whether the pod is ready (for a replica: streaming).
    pub ready: bool,

    /// WAL bytes this replica is behind the primary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_bytes: Option<i64>,

    /// How far this replica's replay is behind the primary in time, in milliseconds, as the
    /// primary measures it (`pg_stat_replication.replay_lag`); absent when caught up and idle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_lag_milliseconds: Option<i64>,

    /// The timeline the instance is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<i64>,

    /// PostgreSQL runs with a parameter value that only a restart applies (Patroni's
    /// `pending_restart`); the rolling update restarts it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pending_restart: bool,

    /// The `tusk.dev/restart-instance` request this instance's pod was recreated for, once
    /// the pod is ready (values longer than 128 characters are recorded by hash).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub restart_request: Option<String>,
}

/// The part an instance plays: Primary, Replica, Stopped or Unknown.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum InstanceRole {
    Primary,
    Replica,
    Stopped,
    #[default]
    Unknown,
}

/// Host and port of the Cluster's Services.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterEndpoints {
    /// The primary, for reads and writes: `<cluster>-rw.<namespace>.svc:5432`.
    #[schemars(length(max = 300))]
    pub read_write: String,

    /// The replicas, for reads only: `<cluster>-ro.<namespace>.svc:5432`.
    #[schemars(length(max = 300))]
    pub read_only: String,

    /// Any instance: `<cluster>-r.<namespace>.svc:5432`.
    #[schemars(length(max = 300))]
    pub read_any: String,
}

/// Usage of one volume.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VolumeUsage {
    /// Instance name.
    #[schemars(length(max = 63))]
    pub instance: String,

    /// `data` or `wal`.
    #[schemars(length(max = 8))]
    pub volume: String,

    /// Capacity of the volume, as a Kubernetes quantity.
    #[schemars(length(max = 32))]
    pub capacity: String,

    /// Bytes used.
    pub used_bytes: i64,

    /// Percent used, 0 to 100.
    pub used_percent: i32,
}

/// Reasons the Cluster controller writes into conditions (also metric labels).
pub mod reasons {
    pub const READY: &str = "Ready";
    pub const PROVISIONING: &str = "Provisioning";
    /// A Cluster that has never been ready: an instance's `postgres` container keeps exiting
    /// (initdb or a restore failed).
    pub const BOOTSTRAP_FAILED: &str = "BootstrapFailed";
    pub const INSTANCES_NOT_READY: &str = "InstancesNotReady";
    pub const NO_PRIMARY: &str = "NoPrimary";
    pub const ROLLING_UPDATE: &str = "RollingUpdate";
    pub const SWITCHOVER: &str = "Switchover";
    pub const SCALING: &str = "Scaling";
    pub const SHUT_DOWN: &str = "ShutDown";
    pub const SHUTTING_DOWN: &str = "ShuttingDown";
    pub const FORBIDDEN_PARAMETER: &str = "ForbiddenParameter";
    pub const INVALID_SPEC: &str = "InvalidSpec";
    pub const UNSUPPORTED_VERSION_CHANGE: &str = "UnsupportedVersionChange";
    pub const ARCHIVING: &str = "Archiving";
    pub const ARCHIVE_FAILING: &str = "ArchiveFailing";
    pub const UPGRADE_IN_PROGRESS: &str = "UpgradeInProgress";
}

impl Cluster {
    /// The rolling restart the `tusk.dev/restart` annotation asks for, as it is recorded in
    /// `status.restartRequest` once done; `None` without the annotation.
    pub fn restart_request(&self) -> Option<String> {
        self.metadata
            .annotations
            .as_ref()?
            .get(crate::labels::RESTART_ANNOTATION)
            .map(|value| crate::user::rotation_request_marker(value))
    }

    /// The restart value the instances' pod template carries: the annotation's, or once the
    /// annotation is removed the last finished one, so removing it restarts nothing.
    pub fn restart_template_value(&self) -> Option<String> {
        self.restart_request()
            .or_else(|| self.status.as_ref()?.restart_request.clone())
    }

    /// The single-instance restart the `tusk.dev/restart-instance` annotation asks for: the
    /// instance named before the first `=`, and the request as its pod records it (see
    /// [`crate::user::rotation_request_marker`]). `None` without the annotation or without an
    /// instance name in it.
    pub fn instance_restart_request(&self) -> Option<(String, String)> {
        let value = self
            .metadata
            .annotations
            .as_ref()?
            .get(crate::labels::RESTART_INSTANCE_ANNOTATION)?;
        let instance = value
            .split_once('=')
            .map_or(value.as_str(), |(i, _)| i)
            .trim();
        if instance.is_empty() {
            return None;
        }
        Some((
            instance.to_owned(),
            crate::user::rotation_request_marker(value),
        ))
    }

    /// Whether the restart the annotation asks for has not finished yet.
    pub fn restart_pending(&self) -> bool {
        self.restart_request().is_some_and(|request| {
            self.status
                .as_ref()
                .and_then(|s| s.restart_request.as_ref())
                != Some(&request)
        })
    }
}

impl ClusterSpec {
    /// The forbidden parameters set in `postgresql.parameters`, sorted.
    pub fn forbidden_parameters(&self) -> Vec<&str> {
        self.postgresql
            .parameters
            .keys()
            .map(String::as_str)
            .filter(|name| FORBIDDEN_PARAMETERS.contains(name))
            .collect()
    }

    /// Whether a backup repository is configured (and so WAL archiving is on).
    pub fn has_repository(&self) -> bool {
        self.backup
            .as_ref()
            .is_some_and(|b| !b.repositories.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minimal() -> Cluster {
        serde_yaml_ng::from_str(
            "apiVersion: tusk.dev/v1alpha1
kind: Cluster
metadata: {name: db, namespace: db}
spec:
  postgresVersion: 17
  storage: {size: 10Gi}
",
        )
        .unwrap()
    }

    #[test]
    fn minimal_cluster_gets_production_defaults() {
        let cluster = minimal();
        let spec = &cluster.spec;
        assert_eq!(spec.instances, 1);
        assert_eq!(spec.replication.mode, ReplicationMode::Asynchronous);
        assert_eq!(
            spec.scheduling.pod_anti_affinity.type_,
            AntiAffinityType::Preferred
        );
        assert_eq!(
            spec.scheduling.pod_anti_affinity.topology_key,
            "kubernetes.io/hostname"
        );
        assert!(spec.monitoring.enabled);
        assert!(!spec.shutdown);
        assert!(spec.tls.server_secret.is_none());
        assert!(!spec.has_repository());
        let ha = &spec.high_availability;
        assert!(ha.loop_wait_seconds + 2 * ha.retry_timeout_seconds <= ha.ttl_seconds);
    }

    #[test]
    fn an_instance_restart_request_names_the_instance_before_the_equals_sign() {
        let request = |value: &str| {
            let mut cluster = minimal();
            cluster.metadata.annotations = Some(BTreeMap::from([(
                crate::labels::RESTART_INSTANCE_ANNOTATION.to_owned(),
                value.to_owned(),
            )]));
            cluster.instance_restart_request()
        };
        assert_eq!(
            request("db-2=2026-12-03T14:00:00Z"),
            Some(("db-2".to_owned(), "db-2=2026-12-03T14:00:00Z".to_owned()))
        );
        assert_eq!(
            request("db-1"),
            Some(("db-1".to_owned(), "db-1".to_owned()))
        );
        assert_eq!(request("=x"), None);
        assert_eq!(request(" "), None);
        let long = format!("db-3={}", "x".repeat(200));
        let (instance, marker) = request(&long).unwrap();
        assert_eq!(instance, "db-3");
        assert!(marker.starts_with("hash:"), "{marker}");
        assert_eq!(minimal().instance_restart_request(), None);
    }

    #[test]
    fn forbidden_parameters_are_reported() {
        let mut cluster = minimal();
        cluster
            .spec
            .postgresql
            .parameters
            .insert("max_connections".into(), "200".into());
        cluster
            .spec
            .postgresql
            .parameters
            .insert("wal_level".into(), "minimal".into());
        cluster
            .spec
            .postgresql
            .parameters
            .insert("ssl".into(), "off".into());
        assert_eq!(
            cluster.spec.forbidden_parameters(),
            vec!["ssl", "wal_level"]
        );
    }

    #[test]
    fn forbidden_parameter_rule_lists_every_parameter() {
        let schema =
            serde_json::to_string(&parameters_schema(&mut SchemaGenerator::default())).unwrap();
        for name in FORBIDDEN_PARAMETERS {
            assert!(
                schema.contains(&format!("'{name}'")),
                "{name} missing from the CEL rule"
            );
        }
    }
}

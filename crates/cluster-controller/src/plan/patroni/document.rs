//! Patroni's configuration file as typed structs (what tusk renders into `patroni.yaml`), and
//! what can make rendering fail.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tusk_api::cluster::reasons;

/// Patroni's configuration file, as tusk renders it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PatroniConfig {
    /// `<cluster>-rw`.
    pub scope: String,
    /// The Kubernetes DCS.
    pub kubernetes: KubernetesDcs,
    /// The REST API (port 8008).
    pub restapi: RestApi,
    /// How a new cluster is initialised; ignored once it exists.
    pub bootstrap: Bootstrap,
    /// This instance's PostgreSQL.
    pub postgresql: LocalPostgresql,
    /// No watchdog device in an unprivileged pod.
    pub watchdog: Watchdog,
}

/// Patroni's Kubernetes DCS: the leader lock on the `<scope>` Endpoints.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KubernetesDcs {
    /// The Cluster's namespace.
    pub namespace: String,
    /// Keep the leader lock on Endpoints (the `-rw` Service's), not on a ConfigMap.
    pub use_endpoints: bool,
    /// Talk to the API servers directly rather than through the `kubernetes` Service, so a
    /// broken Service proxy cannot demote the primary. Needs `get` on the `kubernetes`
    /// Endpoints in `default`; without it Patroni logs a warning and uses the Service.
    pub bypass_api_service: bool,
    /// The labels members are selected by; Patroni adds [`Self::scope_label`].
    pub labels: BTreeMap<String, String>,
    /// The label key carrying the scope.
    pub scope_label: String,
    /// The label key Patroni sets to `master`/`replica` (Patroni 3.x; `primary` in 4.x).
    pub role_label: String,
    /// The ports written into the leader Endpoints.
    pub ports: Vec<EndpointPort>,
}

/// A port of the leader Endpoints.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EndpointPort {
    pub name: String,
    pub port: u16,
}

/// Patroni's REST API.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RestApi {
    /// `0.0.0.0:8008`; the connect address comes from the environment.
    pub listen: String,
    /// Basic authentication for unsafe requests; the password comes from the environment.
    pub authentication: RestApiAuthentication,
}

/// The REST API's user name (the password is [`ENV_RESTAPI_PASSWORD`](crate::shared::layout::ENV_RESTAPI_PASSWORD)).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RestApiAuthentication {
    pub username: String,
}

/// `bootstrap`: the dynamic configuration a new cluster starts with, and how its data is made.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Bootstrap {
    /// Written to the DCS once, when the cluster is initialised.
    pub dcs: DynamicConfig,
    /// A custom bootstrap method: `pgbackrest` when the Cluster restores a backup
    /// (`spec.bootstrap.restore`); `None` is initdb.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// initdb's options.
    pub initdb: Vec<ToolOption>,
    /// The `pgbackrest` bootstrap method: the restore command and the recovery settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pgbackrest: Option<CustomBootstrap>,
}

/// A Patroni custom bootstrap method (Patroni's "custom bootstrap" documentation).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CustomBootstrap {
    /// Run instead of initdb (split like a shell command line, without a shell).
    pub command: String,
    /// Keep the recovery settings pgBackRest wrote into `postgresql.auto.conf` (the target,
    /// the restore_command reading the source); Patroni also trusts them to stop recovery.
    pub keep_existing_recovery_conf: bool,
    /// Do not append `--scope` and `--datadir`: pgBackRest would refuse them.
    pub no_params: bool,
    /// Recovery settings Patroni writes after the command, the same pgBackRest wrote.
    pub recovery_conf: BTreeMap<String, String>,
}

/// A Patroni replica creation method other than basebackup.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReplicaMethod {
    pub command: String,
    /// Leave the data directory in place (pgBackRest's `--delta` reuses what matches).
    pub keep_data: bool,
    pub no_params: bool,
}

/// An option of initdb or pg_basebackup as Patroni takes them: a bare flag
/// (`data-checksums`) or `name: value`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ToolOption {
    Flag(String),
    Value(BTreeMap<String, String>),
}

impl ToolOption {
    pub(crate) fn flag(name: &str) -> Self {
        Self::Flag(name.to_owned())
    }

    pub(crate) fn value(name: &str, value: impl Into<String>) -> Self {
        Self::Value(BTreeMap::from([(name.to_owned(), value.into())]))
    }
}

/// Patroni's dynamic configuration: what tusk renders into `bootstrap.dcs` and later keeps in
/// step through `PATCH /config`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DynamicConfig {
    /// Seconds the leader lock lives without renewal.
    pub ttl: i32,
    /// Seconds between HA loops.
    pub loop_wait: i32,
    /// Seconds DCS and PostgreSQL operations are retried before demotion.
    pub retry_timeout: i32,
    /// Bytes a replica may lag and still be promoted on failover.
    pub maximum_lag_on_failover: i64,
    /// Commits wait for `synchronous_node_count` replicas.
    pub synchronous_mode: bool,
    /// Writes wait (rather than fall back to asynchronous) when no synchronous replica is there.
    pub synchronous_mode_strict: bool,
    /// How many synchronous replicas.
    pub synchronous_node_count: i32,
    /// Keep the primary running while the DCS (the Kubernetes API) is unreachable, as long as
    /// every member confirms it over the REST API — an API-server outage alone never demotes.
    pub failsafe_mode: bool,
    /// PostgreSQL settings shared by all members.
    pub postgresql: DynamicPostgresql,
}

/// The cluster-wide part of the `postgresql` section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DynamicPostgresql {
    /// A former primary catches up with pg_rewind instead of a new base backup.
    pub use_pg_rewind: bool,
    /// Every replica has a replication slot on the primary.
    pub use_slots: bool,
    /// tusk's defaults merged with `spec.postgresql.parameters`.
    pub parameters: BTreeMap<String, String>,
    /// pg_hba.conf, in order (see [`pg_hba`](super::parameters::pg_hba)).
    pub pg_hba: Vec<String>,
}

/// The instance-local `postgresql` section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LocalPostgresql {
    /// `0.0.0.0:5432`; the connect address comes from the environment.
    pub listen: String,
    pub data_dir: String,
    pub bin_dir: String,
    pub pgpass: String,
    /// Patroni's own connections use the unix socket: with hostssl-only network rules, a TCP
    /// connection to 127.0.0.1 would match no line (DESIGN.md §7).
    pub use_unix_socket: bool,
    /// Likewise for Patroni's local replication connection (its timeline check).
    pub use_unix_socket_repl: bool,
    /// Role names and client TLS settings; the passwords come from the environment.
    pub authentication: Authentication,
    /// Pod-layout parameters (socket, TLS files, `ssl`), which override the dynamic ones.
    pub parameters: BTreeMap<String, String>,
    /// How a new replica gets its data: from the backup repository when there is one
    /// (`pgbackrest`, which spares the primary), else or when that fails with `basebackup`.
    pub create_replica_methods: Vec<String>,
    /// pg_basebackup's options.
    pub basebackup: Vec<ToolOption>,
    /// The `pgbackrest` replica method, with a repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pgbackrest: Option<ReplicaMethod>,
    /// Recovery settings of replicas: `restore_command` fetches WAL the primary no longer has
    /// from the archive, with a repository.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub recovery_conf: BTreeMap<String, String>,
}

/// The roles Patroni connects as.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Authentication {
    pub superuser: Credentials,
    pub replication: Credentials,
    pub rewind: Credentials,
}

/// A role name and libpq TLS settings (no password: that comes from the environment).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Credentials {
    pub username: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sslmode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sslrootcert: Option<String>,
}

/// Patroni's watchdog.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Watchdog {
    pub mode: String,
}

/// Why a Cluster's Patroni configuration cannot be rendered. Every variant is a problem with
/// the spec: rendering again without a change fails the same way.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("the Cluster has no name")]
    MissingName,
    #[error(
        "spec.postgresql.parameters sets {}, which tusk controls; remove them",
        .0.join(", ")
    )]
    ForbiddenParameter(Vec<String>),
    #[error(
        "spec.postgresql.parameters sets {0}, which Patroni controls itself and would silently ignore; remove it"
    )]
    PatroniControlledParameter(String),
    #[error(
        "spec.postgresql.parameters.{name} = {value:?} is below {minimum}, the least Patroni accepts (it would silently ignore the value)"
    )]
    ParameterBelowPatroniMinimum {
        name: String,
        value: String,
        minimum: i64,
    },
    #[error(
        "spec.postgresql.parameters has an invalid name {0:?}: use lowercase PostgreSQL parameter names"
    )]
    InvalidParameterName(String),
    #[error("spec.postgresql.parameters.{0} has a line break or control character in its value")]
    InvalidParameterValue(String),
    #[error("spec.postgresql.pgHba line {line:?} is not allowed: {problem}")]
    InvalidHbaLine { line: String, problem: &'static str },
    #[error("spec.bootstrap.restore: {0}")]
    Restore(#[from] tusk_pgbackrest::restore::RestoreError),
    #[error("serialising Patroni's configuration: {0}")]
    Serialize(#[from] serde_yaml_ng::Error),
}

impl RenderError {
    /// The condition reason (and metric label).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::ForbiddenParameter(_) | Self::PatroniControlledParameter(_) => {
                reasons::FORBIDDEN_PARAMETER
            }
            Self::MissingName
            | Self::ParameterBelowPatroniMinimum { .. }
            | Self::InvalidParameterName(_)
            | Self::InvalidParameterValue(_)
            | Self::InvalidHbaLine { .. }
            | Self::Restore(_)
            | Self::Serialize(_) => reasons::INVALID_SPEC,
        }
    }

    /// Always true: the same spec renders the same way.
    pub fn is_permanent(&self) -> bool {
        true
    }
}

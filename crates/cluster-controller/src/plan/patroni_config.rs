//! Patroni's configuration for a Cluster, and the pure decisions around it.
//!
//! ```text
//!  Cluster ─► render_config ─┬─ scope, kubernetes (DCS), restapi, watchdog
//!                            ├─ bootstrap.dcs = dynamic_config(cluster)   read once, at initialisation
//!                            ├─ bootstrap.initdb
//!                            └─ postgresql: paths, socket, TLS files, role names (local)
//!            └─► ConfigMap <cluster>-patroni, key patroni.yaml → /etc/patroni/patroni.yaml
//!
//!  pod environment (INSTANCE_ENV) ─► member name, addresses, passwords
//!
//!  spec change after bootstrap ─► dynamic_config_patch(GET /config, dynamic_config(cluster))
//!                                 └─► PATCH /config, only when something differs
//!  parameter change ─► plan_parameter_change: reload, or restart (and in which order);
//!                      at run time Patroni's `pending_restart` has the last word
//! ```
//!
//! # What goes where
//!
//! Patroni reads `bootstrap.dcs` only when it initialises a new cluster; afterwards the dynamic
//! configuration lives in the DCS and changes only through its REST API (`PATCH /config`). So
//! everything a user may change on a running Cluster — timing, synchronous replication,
//! PostgreSQL parameters and pg_hba — is rendered into [`DynamicConfig`], once into
//! `bootstrap.dcs` and later as a patch. The local `postgresql` section holds what describes the
//! pod (paths, the socket, TLS files, role names): Patroni merges local parameters *over* the
//! dynamic ones, so a hand-edited `/config` can never move them.
//!
//! Patroni itself forces `hot_standby=on`, `wal_log_hints=on`, `listen_addresses`, `port` and
//! `cluster_name` (= the scope) on PostgreSQL's command line and drops any other value for
//! them, so they are not rendered ([`PATRONI_FORCED_PARAMETERS`]).
//!
//! # YAML and PyYAML
//!
//! Patroni parses this file with PyYAML (YAML 1.1), where a plain `on`, `off`, `yes` or `no` is
//! a boolean. serde_yaml_ng writes YAML 1.2 and leaves those words unquoted, so Patroni sees
//! `True`/`False` and writes `'True'`/`'False'` to postgresql.conf — which PostgreSQL accepts
//! for every boolean parameter and every enum that has `on`/`off` among its values. The real
//! Patroni tests check the rendered `on` values with `SHOW`.

use std::collections::BTreeMap;

use crate::shared::layout::{
    PGBACKREST_STANZA, PGPASS_FILE, POSTGRES_PORT_NAME, RESTAPI_USERNAME, SCOPE_LABEL, SOCKET_DIR,
    TLS_DIR, bin_dir, data_dir, dcs_selector_labels, scope, wal_dir,
};
use serde::{Deserialize, Serialize};
use tusk_api::cluster::{Cluster, ReplicationMode, reasons};
use tusk_api::labels;
use tusk_api::names::{PATRONI_PORT, POSTGRES_PORT, keys};
use tusk_api::user::{REPLICATION_ROLE, REWIND_ROLE, SUPERUSER_ROLE};

// ---------------------------------------------------------------------------------------------
// The configuration document
// ---------------------------------------------------------------------------------------------

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

/// The REST API's user name (the password is [`ENV_RESTAPI_PASSWORD`]).
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
    fn flag(name: &str) -> Self {
        Self::Flag(name.to_owned())
    }

    fn value(name: &str, value: impl Into<String>) -> Self {
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
    /// pg_hba.conf, in order (see [`pg_hba`]).
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

/// Renders `patroni.yaml` for `cluster` in `namespace`: the ConfigMap content shared by every
/// instance. Instance-specific values and secrets come from the environment ([`INSTANCE_ENV`]).
pub fn render_config(cluster: &Cluster, namespace: &str) -> Result<String, RenderError> {
    Ok(serde_yaml_ng::to_string(&patroni_config(
        cluster, namespace,
    )?)?)
}

/// The typed configuration behind [`render_config`].
pub fn patroni_config(cluster: &Cluster, namespace: &str) -> Result<PatroniConfig, RenderError> {
    let name = cluster
        .metadata
        .name
        .as_deref()
        .filter(|name| !name.is_empty())
        .ok_or(RenderError::MissingName)?;
    let spec = &cluster.spec;
    let version = spec.postgres_version;
    let bootstrap = spec.bootstrap.as_ref();
    let restore_bootstrap = match bootstrap.and_then(|b| b.restore.as_ref()) {
        Some(restore) => {
            use tusk_pgbackrest::restore::{
                RESTORE_CONFIG_PATH, bootstrap_command, recovery_settings,
            };
            let wal = spec.wal_storage.as_ref().map(|_| wal_dir(version));
            Some(CustomBootstrap {
                command: bootstrap_command(
                    restore,
                    RESTORE_CONFIG_PATH,
                    &data_dir(version),
                    wal.as_deref(),
                )?,
                keep_existing_recovery_conf: true,
                no_params: true,
                recovery_conf: recovery_settings(restore, RESTORE_CONFIG_PATH)?,
            })
        }
        None => None,
    };
    let (create_replica_methods, replica_pgbackrest, recovery_conf) = if spec.has_repository() {
        let mut command = format!("pgbackrest --stanza={PGBACKREST_STANZA} --delta --type=standby");
        if spec.wal_storage.is_some() {
            // Our backups carry pg_wal as a link to the WAL volume: restore it as one.
            command.push_str(" --link-all");
        }
        command.push_str(" restore");
        (
            vec!["pgbackrest".to_owned(), "basebackup".to_owned()],
            Some(ReplicaMethod {
                command,
                keep_data: true,
                no_params: true,
            }),
            BTreeMap::from([(
                "restore_command".to_owned(),
                tusk_pgbackrest::restore_command(),
            )]),
        )
    } else {
        (vec!["basebackup".to_owned()], None, BTreeMap::new())
    };
    let initdb_spec = bootstrap.and_then(|b| b.initdb.clone()).unwrap_or_default();

    let mut initdb = vec![
        ToolOption::value("encoding", &initdb_spec.encoding),
        ToolOption::value("locale", &initdb_spec.locale),
    ];
    if initdb_spec.data_checksums {
        initdb.push(ToolOption::flag("data-checksums"));
    } else if version >= 18 {
        // PostgreSQL 18's initdb turns checksums on unless told not to.
        initdb.push(ToolOption::flag("no-data-checksums"));
    }
    let mut basebackup = vec![ToolOption::value("checkpoint", "fast")];
    if spec.wal_storage.is_some() {
        initdb.push(ToolOption::value("waldir", wal_dir(version)));
        basebackup.push(ToolOption::value("waldir", wal_dir(version)));
    }

    let tls_client = |username: &str| Credentials {
        username: username.to_owned(),
        sslmode: Some("verify-ca".to_owned()),
        sslrootcert: Some(format!("{TLS_DIR}/{}", keys::CA_CERT)),
    };

    Ok(PatroniConfig {
        scope: scope(name),
        kubernetes: KubernetesDcs {
            namespace: namespace.to_owned(),
            use_endpoints: true,
            bypass_api_service: true,
            labels: dcs_selector_labels(name),
            scope_label: SCOPE_LABEL.to_owned(),
            role_label: labels::ROLE.to_owned(),
            ports: vec![EndpointPort {
                name: POSTGRES_PORT_NAME.to_owned(),
                port: POSTGRES_PORT,
            }],
        },
        restapi: RestApi {
            listen: format!("0.0.0.0:{PATRONI_PORT}"),
            authentication: RestApiAuthentication {
                username: RESTAPI_USERNAME.to_owned(),
            },
        },
        bootstrap: Bootstrap {
            dcs: dynamic_config(cluster)?,
            method: restore_bootstrap.as_ref().map(|_| "pgbackrest".to_owned()),
            initdb,
            pgbackrest: restore_bootstrap,
        },
        postgresql: LocalPostgresql {
            listen: format!("0.0.0.0:{POSTGRES_PORT}"),
            data_dir: data_dir(version),
            bin_dir: bin_dir(version),
            pgpass: PGPASS_FILE.to_owned(),
            use_unix_socket: true,
            use_unix_socket_repl: true,
            authentication: Authentication {
                superuser: Credentials {
                    username: SUPERUSER_ROLE.to_owned(),
                    sslmode: None,
                    sslrootcert: None,
                },
                replication: tls_client(REPLICATION_ROLE),
                rewind: tls_client(REWIND_ROLE),
            },
            parameters: local_parameters(),
            create_replica_methods,
            basebackup,
            pgbackrest: replica_pgbackrest,
            recovery_conf,
        },
        watchdog: Watchdog {
            mode: "off".to_owned(),
        },
    })
}

/// The parameters that describe the pod rather than the cluster: the socket and the TLS files.
fn local_parameters() -> BTreeMap<String, String> {
    [
        ("unix_socket_directories", SOCKET_DIR.to_owned()),
        ("ssl", "on".to_owned()),
        ("ssl_cert_file", format!("{TLS_DIR}/{}", keys::TLS_CERT)),
        ("ssl_key_file", format!("{TLS_DIR}/{}", keys::TLS_KEY)),
        ("ssl_ca_file", format!("{TLS_DIR}/{}", keys::CA_CERT)),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value))
    .collect()
}

/// The dynamic configuration for `cluster`: `bootstrap.dcs` at initialisation, and what
/// [`dynamic_config_patch`] keeps the running cluster in step with.
pub fn dynamic_config(cluster: &Cluster) -> Result<DynamicConfig, RenderError> {
    let spec = &cluster.spec;
    let ha = &spec.high_availability;
    Ok(DynamicConfig {
        ttl: ha.ttl_seconds,
        loop_wait: ha.loop_wait_seconds,
        retry_timeout: ha.retry_timeout_seconds,
        maximum_lag_on_failover: ha.maximum_lag_on_failover,
        synchronous_mode: spec.replication.mode != ReplicationMode::Asynchronous,
        synchronous_mode_strict: spec.replication.mode == ReplicationMode::SynchronousStrict,
        synchronous_node_count: spec.replication.synchronous_node_count,
        failsafe_mode: true,
        postgresql: DynamicPostgresql {
            use_pg_rewind: true,
            use_slots: true,
            parameters: parameters(cluster)?,
            pg_hba: pg_hba(cluster)?,
        },
    })
}

/// Parameters Patroni sets on PostgreSQL's command line itself, dropping any other value.
pub const PATRONI_FORCED_PARAMETERS: &[&str] = &[
    "cluster_name",
    "hot_standby",
    "listen_addresses",
    "port",
    "wal_log_hints",
];

/// The least value Patroni accepts for the parameters it passes on the command line; a smaller
/// one is dropped without a word, so tusk refuses it instead.
const PATRONI_MINIMUMS: &[(&str, i64)] = &[
    ("max_connections", 25),
    ("max_locks_per_transaction", 32),
    ("max_prepared_transactions", 0),
    ("max_replication_slots", 4),
    ("max_wal_senders", 3),
    ("max_worker_processes", 2),
];

/// tusk's defaults that a Cluster may override in `spec.postgresql.parameters`.
fn default_parameters() -> BTreeMap<String, String> {
    [
        ("password_encryption", "scram-sha-256"),
        // Up to 15 replicas, plus a pg_basebackup (two senders) and a pgBackRest backup.
        ("max_wal_senders", "20"),
        ("max_replication_slots", "20"),
        // Logs go to the container's stderr.
        ("logging_collector", "off"),
        ("log_destination", "stderr"),
        ("log_line_prefix", "%m [%p] %q%u@%d "),
        ("log_checkpoints", "on"),
        ("log_lock_waits", "on"),
        ("log_autovacuum_min_duration", "1min"),
        ("log_temp_files", "128MB"),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value.to_owned()))
    .collect()
}

/// Parameters tusk sets and a Cluster may not (they are in the API's `FORBIDDEN_PARAMETERS`).
fn controlled_parameters(cluster: &Cluster) -> BTreeMap<String, String> {
    let mut controlled = BTreeMap::from([("wal_level".to_owned(), "replica".to_owned())]);
    if cluster.spec.has_repository() {
        controlled.insert("archive_mode".to_owned(), "on".to_owned());
        controlled.insert(
            "archive_command".to_owned(),
            tusk_pgbackrest::archive_command(),
        );
    }
    controlled
}

/// The dynamic PostgreSQL parameters: tusk's defaults, overridden by
/// `spec.postgresql.parameters`, then tusk's controlled settings (which the spec cannot name).
pub fn parameters(cluster: &Cluster) -> Result<BTreeMap<String, String>, RenderError> {
    let spec_parameters = &cluster.spec.postgresql.parameters;
    let forbidden: Vec<String> = cluster
        .spec
        .forbidden_parameters()
        .into_iter()
        .map(str::to_owned)
        .collect();
    if !forbidden.is_empty() {
        return Err(RenderError::ForbiddenParameter(forbidden));
    }
    for (name, value) in spec_parameters {
        check_parameter(name, value)?;
    }
    let mut parameters = default_parameters();
    parameters.extend(
        spec_parameters
            .iter()
            .map(|(name, value)| (name.clone(), value.clone())),
    );
    parameters.extend(controlled_parameters(cluster));
    if cluster.spec.has_repository() && !parameters.contains_key("archive_timeout") {
        parameters.insert("archive_timeout".to_owned(), "5min".to_owned());
    }
    Ok(parameters)
}

fn check_parameter(name: &str, value: &str) -> Result<(), RenderError> {
    let mut chars = name.chars();
    let valid_name = name.len() <= 63
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.');
    if !valid_name {
        return Err(RenderError::InvalidParameterName(name.to_owned()));
    }
    // Patroni writes `name = 'value'` lines: a line break would start a line of its own.
    if value.chars().any(char::is_control) {
        return Err(RenderError::InvalidParameterValue(name.to_owned()));
    }
    if PATRONI_FORCED_PARAMETERS.contains(&name) {
        return Err(RenderError::PatroniControlledParameter(name.to_owned()));
    }
    if let Some((_, minimum)) = PATRONI_MINIMUMS.iter().find(|(known, _)| *known == name)
        && let Ok(number) = value.trim().parse::<i64>()
        && number < *minimum
    {
        return Err(RenderError::ParameterBelowPatroniMinimum {
            name: name.to_owned(),
            value: value.to_owned(),
            minimum: *minimum,
        });
    }
    Ok(())
}

/// pg_hba.conf, first match wins:
///
/// 1. tusk's own connections, each naming the role it is for: Patroni, the exporter and
///    pgBackRest over the pod's unix socket, and — over TLS from the network — replication,
///    pg_rewind of a former primary, and the operator's superuser connection. They come first
///    so a user line cannot lock tusk out of its own cluster.
/// 2. `spec.postgresql.pgHba`, so a user's `cert` or `reject` lines (or narrower networks)
///    take effect before the default.
/// 3. The default for applications: any role, any database, TLS and SCRAM.
/// 4. Everything else over TCP — notably without TLS — is rejected by name.
///
/// Local connections need a password too (`scram-sha-256`, never `trust` or `peer`): the
/// socket directory is shared by every container of the pod, and `peer` would tie a role to
/// an operating-system user name that pods run with arbitrary UIDs do not have. Every client
/// tusk runs in the pod has its role's password in its environment.
pub fn pg_hba(cluster: &Cluster) -> Result<Vec<String>, RenderError> {
    for line in &cluster.spec.postgresql.pg_hba {
        check_hba_line(line)?;
    }
    let mut lines = vec![
        format!("local all {SUPERUSER_ROLE} scram-sha-256"),
        format!("local replication {REPLICATION_ROLE} scram-sha-256"),
    ];
    if cluster.spec.monitoring.enabled {
        lines.push(format!(
            "local all {} scram-sha-256",
            tusk_api::user::MONITORING_ROLE
        ));
    }
    lines.extend([
        format!("hostssl replication {REPLICATION_ROLE} all scram-sha-256"),
        // pg_rewind reads the new primary's files through the `postgres` database.
        format!("hostssl postgres {REWIND_ROLE} all scram-sha-256"),
        format!("hostssl all {SUPERUSER_ROLE} all scram-sha-256"),
    ]);
    lines.extend(cluster.spec.postgresql.pg_hba.iter().cloned());
    lines.extend([
        "hostssl all all all scram-sha-256".to_owned(),
        "host all all all reject".to_owned(),
    ]);
    Ok(lines)
}

/// The API's CEL rule, checked again because a line break inside a line would slip a second
/// rule (say `host all all all trust`) past it.
fn check_hba_line(line: &str) -> Result<(), RenderError> {
    let invalid = |problem| {
        Err(RenderError::InvalidHbaLine {
            line: line.to_owned(),
            problem,
        })
    };
    if line.chars().any(char::is_control) {
        return invalid("it holds a line break or control character");
    }
    let fields: Vec<&str> = line.split_whitespace().collect();
    if !matches!(fields.first(), Some(&"local" | &"hostssl")) {
        return invalid("only `local` and `hostssl` lines are accepted");
    }
    if !fields
        .iter()
        .skip(1)
        .any(|field| matches!(*field, "scram-sha-256" | "cert" | "reject"))
    {
        return invalid("the method must be scram-sha-256, cert or reject");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Changes after bootstrap
// ---------------------------------------------------------------------------------------------

/// The body to `PATCH /config` with so that Patroni's dynamic configuration (`observed`, from
/// `GET /config`) matches `desired`; `None` when it already does, so a steady-state reconcile
/// writes nothing.
///
/// Only keys tusk renders are compared; others (say a `slots` entry added by hand) are left
/// alone. Parameters present in `observed` but no longer desired are sent as `null`, which
/// Patroni's patch semantics delete (they return to PostgreSQL's or Patroni's default).
/// Scalars compare by their text, so `"100"` and `100` are the same value.
pub fn dynamic_config_patch(
    observed: &serde_json::Value,
    desired: &DynamicConfig,
) -> Result<Option<serde_json::Value>, serde_json::Error> {
    use serde_json::{Map, Value};

    let desired = serde_json::to_value(desired)?;
    let (Value::Object(desired), empty) = (desired, Map::new()) else {
        return Ok(None);
    };
    let observed = observed.as_object().unwrap_or(&empty);
    let mut patch = Map::new();
    for (key, want) in &desired {
        let have = observed.get(key).unwrap_or(&Value::Null);
        if key == "postgresql" {
            if let Some(section) = postgresql_patch(have, want) {
                patch.insert(key.clone(), section);
            }
        } else if !same_value(have, want) {
            patch.insert(key.clone(), want.clone());
        }
    }
    Ok((!patch.is_empty()).then_some(Value::Object(patch)))
}

fn postgresql_patch(
    observed: &serde_json::Value,
    desired: &serde_json::Value,
) -> Option<serde_json::Value> {
    use serde_json::{Map, Value};

    let empty = Map::new();
    let observed = observed.as_object().unwrap_or(&empty);
    let desired = desired.as_object().unwrap_or(&empty);
    let mut patch = Map::new();
    for (key, want) in desired {
        let have = observed.get(key).unwrap_or(&Value::Null);
        if key == "parameters" {
            let have = have.as_object().unwrap_or(&empty);
            let want = want.as_object().unwrap_or(&empty);
            let mut parameters = Map::new();
            for (name, value) in want {
                if !have.get(name).is_some_and(|old| same_value(old, value)) {
                    parameters.insert(name.clone(), value.clone());
                }
            }
            for name in have.keys().filter(|name| !want.contains_key(*name)) {
                parameters.insert(name.clone(), Value::Null);
            }
            if !parameters.is_empty() {
                patch.insert(key.clone(), Value::Object(parameters));
            }
        } else if !same_value(have, want) {
            patch.insert(key.clone(), want.clone());
        }
    }
    (!patch.is_empty()).then_some(Value::Object(patch))
}

fn same_value(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value;

    fn scalar_text(value: &Value) -> Option<String> {
        match value {
            Value::String(text) => Some(text.clone()),
            Value::Number(number) => Some(number.to_string()),
            Value::Bool(flag) => Some(flag.to_string()),
            _ => None,
        }
    }
    match (a, b) {
        // A boolean in the DCS came from a plain YAML 1.1 word in bootstrap.dcs (see the module
        // docs): `on` rendered by tusk is stored as `true`.
        (Value::Bool(flag), Value::String(text)) | (Value::String(text), Value::Bool(flag)) => {
            yaml11_bool(text) == Some(*flag)
        }
        _ => a == b || matches!((scalar_text(a), scalar_text(b)), (Some(x), Some(y)) if x == y),
    }
}

/// The booleans of PyYAML's (YAML 1.1) resolver.
fn yaml11_bool(text: &str) -> Option<bool> {
    match text {
        "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => Some(true),
        "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => Some(false),
        _ => None,
    }
}

/// The PostgreSQL parameters in Patroni's dynamic configuration as `GET /config` returns it,
/// as text: numbers as written, booleans (from plain `on`/`off` in bootstrap.dcs, see the
/// module docs) as `on`/`off`. Compare with [`parameters`] in [`plan_parameter_change`].
pub fn observed_parameters(observed: &serde_json::Value) -> BTreeMap<String, String> {
    use serde_json::Value;

    observed
        .pointer("/postgresql/parameters")
        .and_then(Value::as_object)
        .map(|parameters| {
            parameters
                .iter()
                .filter_map(|(name, value)| {
                    let text = match value {
                        Value::String(text) => text.clone(),
                        Value::Number(number) => number.to_string(),
                        Value::Bool(true) => "on".to_owned(),
                        Value::Bool(false) => "off".to_owned(),
                        _ => return None,
                    };
                    Some((name.clone(), text))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// How a parameter change reaches the running servers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParameterApply {
    /// A reload (`SIGHUP`) applies it; Patroni reloads after `PATCH /config` by itself.
    Reload,
    /// Only a restart applies it (`postmaster` context).
    Restart,
}

/// Parameters of `postmaster` context in PostgreSQL 15 to 18 (from `postgres
/// --describe-config`), plus well-known extension parameters of that context. Others, and
/// unknown extension parameters, are taken as reloadable: Patroni reports `pending_restart`
/// for anything PostgreSQL itself marks so, and the controller trusts that at run time.
const RESTART_PARAMETERS: &[&str] = &[
    "archive_mode",
    "autovacuum_freeze_max_age",
    "autovacuum_multixact_freeze_max_age",
    "autovacuum_worker_slots",
    "bonjour",
    "bonjour_name",
    "cluster_name",
    "commit_timestamp_buffers",
    "data_directory",
    "data_sync_retry",
    "dynamic_shared_memory_type",
    "event_source",
    "external_pid_file",
    "hba_file",
    "hot_standby",
    "huge_page_size",
    "huge_pages",
    "ident_file",
    "io_max_combine_limit",
    "io_max_concurrency",
    "io_method",
    "jit_provider",
    "listen_addresses",
    "logging_collector",
    "max_active_replication_origins",
    "max_connections",
    "max_files_per_process",
    "max_locks_per_transaction",
    "max_logical_replication_workers",
    "max_notify_queue_pages",
    "max_pred_locks_per_transaction",
    "max_prepared_transactions",
    "max_replication_slots",
    "max_wal_senders",
    "max_worker_processes",
    "min_dynamic_shared_memory",
    "multixact_member_buffers",
    "multixact_offset_buffers",
    "notify_buffers",
    "old_snapshot_threshold",
    "pg_stat_statements.max",
    "port",
    "recovery_target",
    "recovery_target_action",
    "recovery_target_inclusive",
    "recovery_target_lsn",
    "recovery_target_name",
    "recovery_target_time",
    "recovery_target_timeline",
    "recovery_target_xid",
    "reserved_connections",
    "serializable_buffers",
    "shared_buffers",
    "shared_memory_type",
    "shared_preload_libraries",
    "subtransaction_buffers",
    "superuser_reserved_connections",
    "track_activity_query_size",
    "track_commit_timestamp",
    "transaction_buffers",
    "unix_socket_directories",
    "unix_socket_group",
    "unix_socket_permissions",
    "wal_buffers",
    "wal_decode_buffer_size",
    "wal_level",
    "wal_log_hints",
];

/// Parameters a hot standby needs at least as high as its primary's. Raising one restarts the
/// replicas first (the usual order); lowering one must restart the primary first, or the
/// replicas cannot replay its WAL.
const HOT_STANDBY_MINIMUM_PARAMETERS: &[&str] = &[
    "max_connections",
    "max_locks_per_transaction",
    "max_prepared_transactions",
    "max_wal_senders",
    "max_worker_processes",
];

/// Whether changing `name` on PostgreSQL `postgres_version` needs a restart.
pub fn parameter_apply(name: &str, postgres_version: i32) -> ParameterApply {
    // PostgreSQL 18 made autovacuum_max_workers reloadable (up to autovacuum_worker_slots).
    if name == "autovacuum_max_workers" {
        return if postgres_version >= 18 {
            ParameterApply::Reload
        } else {
            ParameterApply::Restart
        };
    }
    if RESTART_PARAMETERS.contains(&name) {
        ParameterApply::Restart
    } else {
        ParameterApply::Reload
    }
}

/// What a change of the parameter set needs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParameterChangePlan {
    /// Parameters added, removed or changed, sorted.
    pub changed: Vec<String>,
    /// Those of them that need a restart.
    pub restart: Vec<String>,
    /// Whether the primary must restart before the replicas: a hot-standby minimum went down
    /// (or was removed, which may lower it to the default).
    pub primary_first: bool,
}

impl ParameterChangePlan {
    /// Whether anything changed at all.
    pub fn is_empty(&self) -> bool {
        self.changed.is_empty()
    }

    /// Whether the change needs a rolling restart (else a reload, which Patroni does).
    pub fn needs_restart(&self) -> bool {
        !self.restart.is_empty()
    }
}

/// Compares two rendered parameter sets (for example [`parameters`] of the Cluster before and
/// after a spec change) and says how the change applies.
pub fn plan_parameter_change(
    old: &BTreeMap<String, String>,
    new: &BTreeMap<String, String>,
    postgres_version: i32,
) -> ParameterChangePlan {
    let mut plan = ParameterChangePlan::default();
    let names: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    for name in names {
        let (before, after) = (old.get(name), new.get(name));
        if before == after {
            continue;
        }
        plan.changed.push(name.clone());
        if parameter_apply(name, postgres_version) == ParameterApply::Restart {
            plan.restart.push(name.clone());
        }
        if HOT_STANDBY_MINIMUM_PARAMETERS.contains(&name.as_str()) {
            let number = |value: Option<&String>| value.and_then(|v| v.trim().parse::<i64>().ok());
            let lowered = match (number(before), number(after)) {
                (Some(before), Some(after)) => after < before,
                // Added or removed, or not a plain number: it may go down.
                _ => true,
            };
            plan.primary_first |= lowered;
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::layout::dcs_labels;
    use tusk_api::cluster::FORBIDDEN_PARAMETERS;

    fn cluster(yaml: &str) -> Cluster {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    fn minimal() -> Cluster {
        cluster(
            "apiVersion: tusk.dev/v1alpha1
kind: Cluster
metadata: {name: db, namespace: prod}
spec:
  postgresVersion: 17
  storage: {size: 10Gi}
",
        )
    }

    fn synchronous_three() -> Cluster {
        cluster(
            "apiVersion: tusk.dev/v1alpha1
kind: Cluster
metadata: {name: orders, namespace: shop}
spec:
  postgresVersion: 16
  instances: 3
  storage: {size: 50Gi}
  replication: {mode: Synchronous, synchronousNodeCount: 1}
",
        )
    }

    fn fully_loaded() -> Cluster {
        cluster(
            "apiVersion: tusk.dev/v1alpha1
kind: Cluster
metadata: {name: ledger, namespace: finance}
spec:
  postgresVersion: 18
  instances: 5
  storage: {size: 100Gi, storageClassName: fast}
  walStorage: {size: 20Gi}
  postgresql:
    parameters:
      max_connections: '300'
      shared_buffers: 4GB
      shared_preload_libraries: pg_stat_statements
      log_checkpoints: 'off'
      archive_timeout: 60s
      work_mem: 16MB
    pgHba:
      - hostssl all app_cert 10.0.0.0/8 cert
      - hostssl all all 192.168.0.0/16 reject
  replication: {mode: SynchronousStrict, synchronousNodeCount: 2}
  highAvailability:
    ttlSeconds: 20
    loopWaitSeconds: 5
    retryTimeoutSeconds: 7
    maximumLagOnFailover: 0
  monitoring: {enabled: false}
  bootstrap:
    initdb: {encoding: UTF8, locale: en_US.UTF-8, dataChecksums: false}
  backup:
    repositories:
      - name: repo1
        s3: {bucket: backups, endpoint: s3.eu-central-1.amazonaws.com, region: eu-central-1}
",
        )
    }

    #[test]
    fn minimal_cluster_renders() {
        insta::assert_snapshot!("minimal", render_config(&minimal(), "prod").unwrap());
    }

    #[test]
    fn synchronous_three_instance_cluster_renders() {
        insta::assert_snapshot!(
            "synchronous_three",
            render_config(&synchronous_three(), "shop").unwrap()
        );
    }

    #[test]
    fn fully_loaded_cluster_renders() {
        insta::assert_snapshot!(
            "fully_loaded",
            render_config(&fully_loaded(), "finance").unwrap()
        );
    }

    #[test]
    fn rendered_yaml_round_trips_to_the_typed_config() {
        for (cluster, namespace) in [
            (minimal(), "prod"),
            (synchronous_three(), "shop"),
            (fully_loaded(), "finance"),
        ] {
            let yaml = render_config(&cluster, namespace).unwrap();
            let parsed: PatroniConfig = serde_yaml_ng::from_str(&yaml).unwrap();
            assert_eq!(parsed, patroni_config(&cluster, namespace).unwrap());
        }
    }

    #[test]
    fn scope_is_the_read_write_service() {
        let config = patroni_config(&minimal(), "prod").unwrap();
        assert_eq!(config.scope, "db-rw");
        assert_eq!(config.kubernetes.namespace, "prod");
        assert_eq!(config.kubernetes.role_label, "tusk.dev/role");
        assert_eq!(config.kubernetes.ports[0].name, "postgresql");
        assert_eq!(dcs_labels("db")[SCOPE_LABEL], "db-rw");
        assert_eq!(dcs_labels("db")["tusk.dev/cluster"], "db");
    }

    #[test]
    fn timing_and_replication_mode_come_from_the_spec() {
        let dcs = dynamic_config(&fully_loaded()).unwrap();
        assert_eq!((dcs.ttl, dcs.loop_wait, dcs.retry_timeout), (20, 5, 7));
        assert_eq!(dcs.maximum_lag_on_failover, 0);
        assert!(dcs.synchronous_mode && dcs.synchronous_mode_strict);
        assert_eq!(dcs.synchronous_node_count, 2);

        let dcs = dynamic_config(&synchronous_three()).unwrap();
        assert!(dcs.synchronous_mode && !dcs.synchronous_mode_strict);

        let dcs = dynamic_config(&minimal()).unwrap();
        assert!(!dcs.synchronous_mode && !dcs.synchronous_mode_strict);
        assert_eq!((dcs.ttl, dcs.loop_wait, dcs.retry_timeout), (8, 2, 3));
    }

    #[test]
    fn spec_parameters_override_defaults_but_not_controlled_settings() {
        let params = parameters(&fully_loaded()).unwrap();
        assert_eq!(params["log_checkpoints"], "off", "spec beats a default");
        assert_eq!(params["max_connections"], "300");
        assert_eq!(
            params["archive_timeout"], "60s",
            "spec beats the archive default"
        );
        assert_eq!(params["password_encryption"], "scram-sha-256");
        assert_eq!(params["wal_level"], "replica");
        assert_eq!(params["archive_mode"], "on");
        assert_eq!(
            params["archive_command"],
            "pgbackrest --stanza=db archive-push \"%p\""
        );
    }

    #[test]
    fn archiving_is_on_only_with_a_repository() {
        let params = parameters(&minimal()).unwrap();
        assert!(!params.contains_key("archive_mode"));
        assert!(!params.contains_key("archive_command"));
        assert!(!params.contains_key("archive_timeout"));
        assert_eq!(parameters(&fully_loaded()).unwrap()["archive_mode"], "on");
    }

    #[test]
    fn tls_and_socket_settings_are_local_so_the_dcs_cannot_override_them() {
        let config = patroni_config(&minimal(), "prod").unwrap();
        let local = &config.postgresql.parameters;
        assert_eq!(local["ssl"], "on");
        assert_eq!(local["ssl_cert_file"], "/etc/tusk/tls/tls.crt");
        assert_eq!(local["ssl_key_file"], "/etc/tusk/tls/tls.key");
        assert_eq!(local["ssl_ca_file"], "/etc/tusk/tls/ca.crt");
        assert_eq!(local["unix_socket_directories"], "/var/run/postgresql");
        assert!(config.postgresql.use_unix_socket && config.postgresql.use_unix_socket_repl);
        let dynamic = &config.bootstrap.dcs.postgresql.parameters;
        assert!(local.keys().all(|name| !dynamic.contains_key(name)));
    }

    #[test]
    fn no_forbidden_or_patroni_forced_parameter_is_rendered_from_the_spec() {
        for cluster in [minimal(), synchronous_three(), fully_loaded()] {
            let params = parameters(&cluster).unwrap();
            let controlled = controlled_parameters(&cluster);
            for name in params.keys() {
                assert!(
                    !FORBIDDEN_PARAMETERS.contains(&name.as_str()) || controlled.contains_key(name),
                    "{name} is forbidden and not tusk's own"
                );
                assert!(
                    !PATRONI_FORCED_PARAMETERS.contains(&name.as_str()),
                    "{name}"
                );
            }
        }
    }

    #[test]
    fn forbidden_parameters_are_refused_not_dropped() {
        let mut cluster = minimal();
        let parameters = &mut cluster.spec.postgresql.parameters;
        parameters.insert("ssl".into(), "off".into());
        parameters.insert("wal_level".into(), "minimal".into());
        let error = render_config(&cluster, "prod").unwrap_err();
        assert!(
            matches!(&error, RenderError::ForbiddenParameter(names) if names == &["ssl", "wal_level"])
        );
        assert_eq!(error.reason(), "ForbiddenParameter");
        assert!(error.is_permanent());
    }

    #[test]
    fn parameters_patroni_would_ignore_are_refused() {
        let refused = |name: &str, value: &str| {
            let mut cluster = minimal();
            cluster
                .spec
                .postgresql
                .parameters
                .insert(name.into(), value.into());
            render_config(&cluster, "prod").unwrap_err()
        };
        // cluster_name is also on the API's forbidden list now.
        assert!(matches!(
            refused("cluster_name", "x"),
            RenderError::ForbiddenParameter(_) | RenderError::PatroniControlledParameter(_)
        ));
        assert!(matches!(
            refused("max_connections", "20"),
            RenderError::ParameterBelowPatroniMinimum { minimum: 25, .. }
        ));
        assert!(matches!(
            refused("max_wal_senders", "2"),
            RenderError::ParameterBelowPatroniMinimum { minimum: 3, .. }
        ));
        assert!(matches!(
            refused("work_mem", "4MB'\nssl = 'off"),
            RenderError::InvalidParameterValue(_)
        ));
        assert!(matches!(
            refused("Work_Mem", "4MB"),
            RenderError::InvalidParameterName(_)
        ));
    }

    #[test]
    fn pg_hba_puts_tusk_first_then_the_spec_then_the_default_then_reject() {
        let lines = pg_hba(&fully_loaded()).unwrap();
        let position = |wanted: &str| {
            lines
                .iter()
                .position(|line| line == wanted)
                .unwrap_or_else(|| panic!("{wanted} missing from {lines:#?}"))
        };
        let replication = position("hostssl replication replicator all scram-sha-256");
        let socket = position("local all postgres scram-sha-256");
        let rewind = position("hostssl postgres tusk_rewind all scram-sha-256");
        let user_cert = position("hostssl all app_cert 10.0.0.0/8 cert");
        let user_reject = position("hostssl all all 192.168.0.0/16 reject");
        let default = position("hostssl all all all scram-sha-256");
        let reject = position("host all all all reject");
        assert!(socket < replication && replication < rewind && rewind < user_cert);
        assert!(user_cert < user_reject && user_reject < default);
        assert_eq!(default + 1, reject);
        assert_eq!(reject, lines.len() - 1, "the reject line is last");
        assert!(
            lines.iter().all(|line| !line.contains("trust")
                && !line.contains("peer")
                && !line.contains(" md5")
                && !line.contains(" password")),
            "no password-less or weak method: {lines:#?}"
        );
        assert!(
            lines
                .iter()
                .all(|line| !line.starts_with("host ") || line.ends_with("reject")),
            "plain host lines only reject"
        );
    }

    #[test]
    fn pg_hba_has_the_monitoring_line_only_with_monitoring() {
        let has_monitor = |cluster: &Cluster| {
            pg_hba(cluster)
                .unwrap()
                .iter()
                .any(|line| line.contains("tusk_monitor"))
        };
        assert!(has_monitor(&minimal()));
        assert!(!has_monitor(&fully_loaded()));
    }

    #[test]
    fn pg_hba_line_with_a_line_break_is_refused_not_injected() {
        let mut cluster = minimal();
        cluster
            .spec
            .postgresql
            .pg_hba
            .push("hostssl all all 10.0.0.0/8 scram-sha-256\nhost all all all trust".into());
        assert!(matches!(
            render_config(&cluster, "prod").unwrap_err(),
            RenderError::InvalidHbaLine { .. }
        ));
        for bad in [
            "host all all all scram-sha-256",
            "hostssl all all all trust",
            "hostssl all all all md5",
        ] {
            let mut cluster = minimal();
            cluster.spec.postgresql.pg_hba.push(bad.into());
            assert!(pg_hba(&cluster).is_err(), "{bad}");
        }
    }

    #[test]
    fn wal_storage_moves_wal_for_initdb_and_basebackup() {
        let config = patroni_config(&fully_loaded(), "finance").unwrap();
        let waldir = ToolOption::value("waldir", "/pgwal/pg18_wal");
        assert!(config.bootstrap.initdb.contains(&waldir));
        assert!(config.postgresql.basebackup.contains(&waldir));
        assert_eq!(config.postgresql.data_dir, "/pgdata/pg18");
        assert_eq!(config.postgresql.bin_dir, "/usr/lib/postgresql/18/bin");

        let config = patroni_config(&minimal(), "prod").unwrap();
        assert!(
            !config.bootstrap.initdb.iter().any(
                |option| matches!(option, ToolOption::Value(map) if map.contains_key("waldir"))
            )
        );
    }

    #[test]
    fn initdb_options_follow_the_spec() {
        let config = patroni_config(&minimal(), "prod").unwrap();
        assert_eq!(
            config.bootstrap.initdb,
            vec![
                ToolOption::value("encoding", "UTF8"),
                ToolOption::value("locale", "C.UTF-8"),
                ToolOption::flag("data-checksums"),
            ]
        );
        let config = patroni_config(&fully_loaded(), "finance").unwrap();
        assert!(
            config
                .bootstrap
                .initdb
                .contains(&ToolOption::flag("no-data-checksums"))
        );
        assert!(
            config
                .bootstrap
                .initdb
                .contains(&ToolOption::value("locale", "en_US.UTF-8"))
        );
        assert!(config.bootstrap.method.is_none());
    }

    #[test]
    fn restore_bootstrap_runs_pgbackrest_and_keeps_its_recovery_settings() {
        let mut cluster = minimal();
        cluster.spec.bootstrap = Some(tusk_api::cluster::BootstrapSpec {
            initdb: None,
            restore: Some(tusk_api::cluster::RestoreSpec {
                cluster: Some("old".into()),
                repository_name: "repo1".into(),
                target: Some(tusk_api::cluster::RecoveryTarget {
                    time: Some("2026-11-22T10:15:00Z".into()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        });
        let config = patroni_config(&cluster, "prod").unwrap();
        assert_eq!(config.bootstrap.method.as_deref(), Some("pgbackrest"));
        let method = config.bootstrap.pgbackrest.unwrap();
        assert_eq!(
            method.command,
            "pgbackrest --config=/etc/pgbackrest/restore/pgbackrest.conf --stanza=db --type=time '--target=2026-11-22 10:15:00+00' --target-action=promote restore"
        );
        assert!(method.keep_existing_recovery_conf && method.no_params);
        assert_eq!(method.recovery_conf["recovery_target_action"], "promote");
        assert_eq!(
            method.recovery_conf["recovery_target_time"],
            "2026-11-22 10:15:00+00"
        );
        assert!(
            method.recovery_conf["restore_command"]
                .contains("--config=/etc/pgbackrest/restore/pgbackrest.conf"),
            "recovery reads the source"
        );
        // The YAML Patroni reads has the method under its name.
        let yaml = render_config(&cluster, "prod").unwrap();
        assert!(yaml.contains("method: pgbackrest"), "{yaml}");
        assert!(yaml.contains("keep_existing_recovery_conf: true"), "{yaml}");

        let mut bad = cluster.clone();
        bad.spec
            .bootstrap
            .as_mut()
            .unwrap()
            .restore
            .as_mut()
            .unwrap()
            .target = Some(tusk_api::cluster::RecoveryTarget {
            time: Some("tomorrow".into()),
            ..Default::default()
        });
        let error = render_config(&bad, "prod").unwrap_err();
        assert!(matches!(error, RenderError::Restore(_)));
        assert_eq!(error.reason(), "InvalidSpec");
    }

    #[test]
    fn with_a_repository_replicas_restore_from_it_and_archive_with_the_stanza() {
        let config = patroni_config(&fully_loaded(), "finance").unwrap();
        assert_eq!(
            config.postgresql.create_replica_methods,
            ["pgbackrest", "basebackup"]
        );
        let method = config.postgresql.pgbackrest.unwrap();
        assert_eq!(
            method.command,
            "pgbackrest --stanza=db --delta --type=standby --link-all restore"
        );
        assert!(method.keep_data && method.no_params);
        assert_eq!(
            config.postgresql.recovery_conf["restore_command"],
            "pgbackrest --stanza=db archive-get %f \"%p\""
        );
        assert_eq!(
            parameters(&fully_loaded()).unwrap()["archive_command"],
            "pgbackrest --stanza=db archive-push \"%p\""
        );
        let minimal = patroni_config(&minimal(), "prod").unwrap();
        assert_eq!(minimal.postgresql.create_replica_methods, ["basebackup"]);
        assert!(minimal.postgresql.pgbackrest.is_none());
        assert!(minimal.postgresql.recovery_conf.is_empty());
        assert!(minimal.bootstrap.pgbackrest.is_none());
    }

    #[test]
    fn no_password_is_rendered_into_the_config_map() {
        let yaml = render_config(&fully_loaded(), "finance").unwrap();
        assert!(!yaml.contains("password:"), "{yaml}");
    }

    #[test]
    fn restart_classification_knows_postmaster_parameters() {
        for name in [
            "shared_buffers",
            "max_connections",
            "shared_preload_libraries",
            "max_worker_processes",
            "max_wal_senders",
            "max_replication_slots",
            "wal_level",
            "archive_mode",
            "pg_stat_statements.max",
        ] {
            assert_eq!(parameter_apply(name, 17), ParameterApply::Restart, "{name}");
        }
        for name in [
            "work_mem",
            "archive_command",
            "log_min_duration_statement",
            "ssl",
            "password_encryption",
            "synchronous_commit",
            "some_extension.setting",
        ] {
            assert_eq!(parameter_apply(name, 17), ParameterApply::Reload, "{name}");
        }
        assert_eq!(
            parameter_apply("autovacuum_max_workers", 17),
            ParameterApply::Restart
        );
        assert_eq!(
            parameter_apply("autovacuum_max_workers", 18),
            ParameterApply::Reload
        );
    }

    #[test]
    fn parameter_change_plan_separates_reload_from_restart() {
        let old = parameters(&minimal()).unwrap();
        let mut changed = minimal();
        changed
            .spec
            .postgresql
            .parameters
            .insert("work_mem".into(), "64MB".into());
        let new = parameters(&changed).unwrap();
        let plan = plan_parameter_change(&old, &new, 17);
        assert_eq!(plan.changed, vec!["work_mem"]);
        assert!(!plan.needs_restart());
        assert!(!plan.primary_first);

        changed
            .spec
            .postgresql
            .parameters
            .insert("shared_buffers".into(), "1GB".into());
        let plan = plan_parameter_change(&old, &parameters(&changed).unwrap(), 17);
        assert_eq!(plan.changed, vec!["shared_buffers", "work_mem"]);
        assert_eq!(plan.restart, vec!["shared_buffers"]);
        assert!(plan.needs_restart());

        assert!(plan_parameter_change(&old, &old, 17).is_empty());
    }

    #[test]
    fn lowering_a_hot_standby_minimum_restarts_the_primary_first() {
        let with = |value: &str| BTreeMap::from([("max_connections".to_owned(), value.to_owned())]);
        assert!(!plan_parameter_change(&with("100"), &with("200"), 17).primary_first);
        assert!(plan_parameter_change(&with("200"), &with("100"), 17).primary_first);
        assert!(plan_parameter_change(&with("200"), &BTreeMap::new(), 17).primary_first);
        let shared =
            |value: &str| BTreeMap::from([("shared_buffers".to_owned(), value.to_owned())]);
        assert!(!plan_parameter_change(&shared("2GB"), &shared("1GB"), 17).primary_first);
    }

    #[test]
    fn steady_state_patch_is_empty() {
        let desired = dynamic_config(&minimal()).unwrap();
        let observed = serde_json::to_value(&desired).unwrap();
        assert_eq!(dynamic_config_patch(&observed, &desired).unwrap(), None);
    }

    #[test]
    fn patch_carries_changes_and_deletes_dropped_parameters() {
        let mut before = minimal();
        before
            .spec
            .postgresql
            .parameters
            .insert("work_mem".into(), "8MB".into());
        let mut observed = serde_json::to_value(dynamic_config(&before).unwrap()).unwrap();
        // Patroni may hold a number where tusk renders a string, a boolean where bootstrap.dcs
        // had a plain `on` (PyYAML), and keys tusk does not own.
        observed["postgresql"]["parameters"]["max_wal_senders"] = serde_json::json!(20);
        observed["postgresql"]["parameters"]["log_checkpoints"] = serde_json::json!(true);
        observed["postgresql"]["parameters"]["logging_collector"] = serde_json::json!(false);
        observed["slots"] = serde_json::json!({"keep": {"type": "physical"}});

        let mut after = minimal();
        after.spec.high_availability.ttl_seconds = 12;
        after
            .spec
            .postgresql
            .parameters
            .insert("statement_timeout".into(), "30s".into());
        let desired = dynamic_config(&after).unwrap();
        let patch = dynamic_config_patch(&observed, &desired).unwrap().unwrap();
        assert!(same_value(
            &serde_json::json!(true),
            &serde_json::json!("on")
        ));
        assert!(!same_value(
            &serde_json::json!(true),
            &serde_json::json!("off")
        ));
        assert!(!same_value(
            &serde_json::json!(true),
            &serde_json::json!("1")
        ));
        assert_eq!(
            patch,
            serde_json::json!({
                "ttl": 12,
                "postgresql": {"parameters": {"statement_timeout": "30s", "work_mem": null}}
            })
        );
    }

    #[test]
    fn observed_parameters_read_back_as_rendered() {
        let desired = dynamic_config(&minimal()).unwrap();
        let mut observed = serde_json::to_value(&desired).unwrap();
        observed["postgresql"]["parameters"]["log_checkpoints"] = serde_json::json!(true);
        observed["postgresql"]["parameters"]["logging_collector"] = serde_json::json!(false);
        observed["postgresql"]["parameters"]["max_wal_senders"] = serde_json::json!(20);
        let plan = plan_parameter_change(
            &observed_parameters(&observed),
            &desired.postgresql.parameters,
            17,
        );
        assert!(plan.is_empty(), "{plan:?}");
        assert!(observed_parameters(&serde_json::json!({})).is_empty());
    }

    #[test]
    fn patch_replaces_pg_hba_as_a_whole() {
        let observed = serde_json::to_value(dynamic_config(&minimal()).unwrap()).unwrap();
        let mut after = minimal();
        after
            .spec
            .postgresql
            .pg_hba
            .push("hostssl all all 10.0.0.0/8 cert".into());
        let desired = dynamic_config(&after).unwrap();
        let patch = dynamic_config_patch(&observed, &desired).unwrap().unwrap();
        assert_eq!(
            patch["postgresql"]["pg_hba"],
            serde_json::to_value(&desired.postgresql.pg_hba).unwrap()
        );
        assert!(patch["postgresql"].get("parameters").is_none());
    }
}

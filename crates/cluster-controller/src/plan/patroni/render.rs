//! Renders a Cluster's `patroni.yaml`: scope and Kubernetes DCS, REST API, bootstrap (initdb or
//! a pgBackRest restore), the local `postgresql` section and the dynamic configuration.

use super::document::*;
use super::parameters::*;
use crate::shared::layout::{
    PGBACKREST_STANZA, PGPASS_FILE, POSTGRES_PORT_NAME, RESTAPI_USERNAME, SCOPE_LABEL, SOCKET_DIR,
    TLS_DIR, bin_dir, data_dir, dcs_selector_labels, scope, wal_dir,
};
use std::collections::BTreeMap;
use tusk_api::cluster::{Cluster, ReplicationMode};
use tusk_api::labels;
use tusk_api::names::{PATRONI_PORT, POSTGRES_PORT, keys};
use tusk_api::user::{REPLICATION_ROLE, REWIND_ROLE, SUPERUSER_ROLE};

/// Renders `patroni.yaml` for `cluster` in `namespace`: the ConfigMap content shared by every
/// instance. Instance-specific values and secrets come from the environment ([`INSTANCE_ENV`](crate::shared::layout::INSTANCE_ENV)).
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
    let restore_bootstrap = restore_bootstrap(cluster)?;
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
            initdb: initdb_options(cluster),
            pgbackrest: restore_bootstrap,
        },
        postgresql: local_postgresql(cluster),
        watchdog: Watchdog {
            mode: "off".to_owned(),
        },
    })
}

/// Patroni's custom bootstrap for `spec.bootstrap.restore`: pgBackRest restores the data
/// directory, PostgreSQL recovers to the target.
fn restore_bootstrap(cluster: &Cluster) -> Result<Option<CustomBootstrap>, RenderError> {
    use tusk_pgbackrest::restore::{RESTORE_CONFIG_PATH, bootstrap_command, recovery_settings};
    let spec = &cluster.spec;
    let Some(restore) = spec.bootstrap.as_ref().and_then(|b| b.restore.as_ref()) else {
        return Ok(None);
    };
    let version = spec.postgres_version;
    let wal = spec.wal_storage.as_ref().map(|_| wal_dir(version));
    Ok(Some(CustomBootstrap {
        command: bootstrap_command(
            restore,
            RESTORE_CONFIG_PATH,
            &data_dir(version),
            wal.as_deref(),
        )?,
        keep_existing_recovery_conf: true,
        no_params: true,
        recovery_conf: recovery_settings(restore, RESTORE_CONFIG_PATH)?,
    }))
}

/// initdb's options from `spec.bootstrap.initdb`.
fn initdb_options(cluster: &Cluster) -> Vec<ToolOption> {
    let spec = &cluster.spec;
    let version = spec.postgres_version;
    let initdb_spec = spec
        .bootstrap
        .as_ref()
        .and_then(|b| b.initdb.clone())
        .unwrap_or_default();
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
    if spec.wal_storage.is_some() {
        initdb.push(ToolOption::value("waldir", wal_dir(version)));
    }
    initdb
}

/// The local `postgresql` section: paths, the socket, the roles Patroni logs in as, and how
/// a new replica gets its data (pgBackRest first when there is a repository).
fn local_postgresql(cluster: &Cluster) -> LocalPostgresql {
    let spec = &cluster.spec;
    let version = spec.postgres_version;
    let (create_replica_methods, replica_pgbackrest, recovery_conf) = replica_creation(cluster);
    let mut basebackup = vec![ToolOption::value("checkpoint", "fast")];
    if spec.wal_storage.is_some() {
        basebackup.push(ToolOption::value("waldir", wal_dir(version)));
    }
    let tls_client = |username: &str| Credentials {
        username: username.to_owned(),
        sslmode: Some("verify-ca".to_owned()),
        sslrootcert: Some(format!("{TLS_DIR}/{}", keys::CA_CERT)),
    };
    LocalPostgresql {
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
    }
}

/// `create_replica_methods`, the pgBackRest replica method and `recovery_conf`: a replica is
/// restored from the repository when there is one (and then fetches WAL from it), else
/// copied with pg_basebackup.
fn replica_creation(
    cluster: &Cluster,
) -> (Vec<String>, Option<ReplicaMethod>, BTreeMap<String, String>) {
    if !cluster.spec.has_repository() {
        return (vec!["basebackup".to_owned()], None, BTreeMap::new());
    }
    let mut command = format!("pgbackrest --stanza={PGBACKREST_STANZA} --delta --type=standby");
    if cluster.spec.wal_storage.is_some() {
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
}

/// The parameters that describe the pod rather than the cluster: the socket and the TLS files.
pub(crate) fn local_parameters() -> BTreeMap<String, String> {
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
/// [`dynamic_config_patch`](super::changes::dynamic_config_patch) keeps the running cluster in step with.
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

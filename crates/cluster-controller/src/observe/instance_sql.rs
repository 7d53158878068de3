//! SQL on each running instance, over the operator's TLS superuser connection to the pod's IP
//! (the certificate is verified against the `-rw` host name, which every instance's
//! certificate carries).
//!
//! ```text
//!  observe: per ready pod ─► connect ─► volume usage (storage::USAGE_QUERY)
//!                                    └► were the TLS files replaced after the last load?
//!  apply:   renewed certificate ─► SELECT pg_reload_conf()   (once: the load time moves past
//!                                                            the files' modification time)
//!           primary ─► monitoring role (monitor_role::ensure_role)
//! ```
//!
//! A certificate renewal rewrites the Secret; the kubelet replaces the projected files in
//! the pod a minute or so later, and PostgreSQL keeps serving the old certificate until it
//! reloads. Whether a reload is due is read from the server itself: the newest modification
//! time of `ssl_cert_file`, `ssl_key_file` and `ssl_ca_file` against `pg_conf_load_time()`.
//! Nothing is recorded anywhere, so a steady pass writes nothing, and a restarted pod (which
//! loaded the new files at start) needs no reload.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use tusk_api::Cluster;
use tusk_api::names::{self, keys};
use tusk_runtime::postgres::PrimaryTarget;

/// `true` when a TLS file PostgreSQL uses changed after the configuration was last loaded.
pub const CERTIFICATES_CHANGED_QUERY: &str = "SELECT coalesce(pg_conf_load_time() < max(modified), false) FROM ( \
       SELECT (pg_stat_file(path, true)).modification AS modified \
       FROM (SELECT current_setting(name) AS path \
             FROM unnest(ARRAY['ssl_cert_file', 'ssl_key_file', 'ssl_ca_file']) AS name) AS setting \
       WHERE path <> '') AS files";

/// The connection target of the instance at `pod_ip`: superuser from the observed
/// `<cluster>-superuser` Secret, CA from the Secret clients trust (`spec.tls.caSecret` or
/// `<cluster>-ca`). `None` until those Secrets exist.
pub fn instance_target(
    cluster: &Cluster,
    secrets: &BTreeMap<String, Secret>,
    pod_ip: IpAddr,
) -> Option<PrimaryTarget> {
    let name = cluster.metadata.name.as_deref()?;
    let namespace = cluster.metadata.namespace.as_deref()?;
    let value = |secret: &str, key: &str| -> Option<Vec<u8>> {
        secrets
            .get(secret)?
            .data
            .as_ref()?
            .get(key)
            .map(|v| v.0.clone())
            .filter(|v| !v.is_empty())
    };
    let superuser = names::superuser_secret(name);
    Some(PrimaryTarget {
        host: names::read_write_host(name, namespace),
        port: names::POSTGRES_PORT,
        address: Some(pod_ip),
        ca_pem: Some(value(&names::client_ca_secret(cluster), keys::CA_CERT)?),
        user: String::from_utf8(value(&superuser, keys::USERNAME)?).ok()?,
        password: String::from_utf8(value(&superuser, keys::PASSWORD)?).ok()?,
    })
}

/// What one instance said.
#[derive(Clone)]
pub struct InstanceSession {
    /// Instance name, `<cluster>-<n>`.
    pub instance: String,
    /// The open connection, reused by the apply step.
    pub client: Arc<tokio_postgres::Client>,
    /// Bytes PostgreSQL's files take.
    pub usage: Option<InstanceUsage>,
    /// The TLS files changed after the last configuration load.
    pub certificates_changed: bool,
    /// The standbys streaming from this instance, by `application_name` (Patroni's member
    /// name, the instance name), with their replay lag in milliseconds when PostgreSQL has a
    /// recent measurement ([`STANDBYS_QUERY`]).
    pub standbys: BTreeMap<String, Option<i64>>,
    /// PostgreSQL's system identifier (`pg_control_system()`).
    pub system_identifier: Option<String>,
}

impl std::fmt::Debug for InstanceSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstanceSession")
            .field("instance", &self.instance)
            .field("usage", &self.usage)
            .field("certificates_changed", &self.certificates_changed)
            .field("standbys", &self.standbys)
            .field("system_identifier", &self.system_identifier)
            .finish_non_exhaustive()
    }
}

/// Connects to `target` and reads what the controller needs from the instance.
pub async fn observe_instance(
    instance: String,
    target: &PrimaryTarget,
) -> Result<InstanceSession, String> {
    let client = target
        .connect("postgres", "tusk-cluster-controller")
        .await
        .map_err(|e| format!("connecting: {e}"))?;
    observe_with(instance, Arc::new(client)).await
}

/// [`observe_instance`] over an open connection.
pub async fn observe_with(
    instance: String,
    client: Arc<tokio_postgres::Client>,
) -> Result<InstanceSession, String> {
    let usage = measure_usage(&client)
        .await
        .map_err(|e| format!("measuring volume usage: {e}"))?;
    let certificates_changed = certificates_changed(&client)
        .await
        .map_err(|e| format!("checking the TLS files: {e}"))?;
    let standbys = standbys(&client)
        .await
        .map_err(|e| format!("reading pg_stat_replication: {e}"))?;
    let system_identifier = client
        .query_one(
            "SELECT system_identifier::text FROM pg_control_system()",
            &[],
        )
        .await
        .map_err(|e| format!("reading the system identifier: {e}"))?
        .get(0);
    Ok(InstanceSession {
        instance,
        client,
        usage: Some(usage),
        certificates_changed,
        standbys,
        system_identifier,
    })
}

/// The standbys streaming from the instance and their replay lag ([`STANDBYS_QUERY`]).
pub async fn standbys(
    client: &tokio_postgres::Client,
) -> Result<BTreeMap<String, Option<i64>>, tokio_postgres::Error> {
    Ok(client
        .query(STANDBYS_QUERY, &[])
        .await?
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect())
}

/// Each streaming standby's name and replay lag in whole milliseconds. `replay_lag` is what
/// the sender measured for recent WAL: NULL once a standby has caught up and no WAL has been
/// written for a while, so an idle cluster reports no lag rather than a stale one.
pub const STANDBYS_QUERY: &str = "SELECT application_name, \
     round(extract(epoch FROM replay_lag) * 1000)::int8 \
     FROM pg_stat_replication \
     WHERE application_name <> '' AND state = 'streaming' \
     ORDER BY application_name";

/// Bytes PostgreSQL's files take on the instance ([`USAGE_QUERY`]).
pub async fn measure_usage(
    client: &tokio_postgres::Client,
) -> Result<InstanceUsage, tokio_postgres::Error> {
    let row = client.query_one(USAGE_QUERY, &[]).await?;
    let bytes = |index: usize| u64::try_from(row.get::<_, i64>(index)).unwrap_or(0);
    Ok(InstanceUsage {
        data: bytes(0),
        wal: bytes(1),
    })
}

/// Whether PostgreSQL still runs with TLS files older than those on disk.
pub async fn certificates_changed(
    client: &tokio_postgres::Client,
) -> Result<bool, tokio_postgres::Error> {
    Ok(client
        .query_one(CERTIFICATES_CHANGED_QUERY, &[])
        .await?
        .get(0))
}

/// Reloads PostgreSQL's configuration (and with it the TLS files).
pub async fn reload(client: &tokio_postgres::Client) -> Result<(), tokio_postgres::Error> {
    client.query_one("SELECT pg_reload_conf()", &[]).await?;
    Ok(())
}

/// Bytes PostgreSQL's files take on one instance, per [`USAGE_QUERY`]: `(data, wal)`.
/// `wal` is the WAL directory's size, on whichever volume holds it.
pub const USAGE_QUERY: &str = "SELECT \
     (SELECT coalesce(sum(pg_database_size(oid)), 0) FROM pg_database)::int8 \
     + pg_tablespace_size('pg_global') \
     + (SELECT coalesce(sum(size), 0) FROM pg_ls_tmpdir())::int8 AS data, \
     (SELECT coalesce(sum(size), 0) FROM pg_ls_waldir())::int8 AS wal";

/// Bytes used by PostgreSQL on one instance.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InstanceUsage {
    /// Databases, shared catalog, temporary files.
    pub data: u64,
    /// The WAL directory.
    pub wal: u64,
}

//! What backups need read: pgBackRest's children, the restore source Cluster, and the
//! primary's archiver and timeline history over SQL.

use crate::error::Error;
use crate::shared::layout::{restore_spec, stanza_job_name};
use crate::shared::meta::{cluster_name, namespace};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::Api;
use std::sync::Arc;
use tusk_api::Cluster;
use tusk_api::names::{self};

/// What was read for this module: its children, the restore source, and the primary's view.
#[derive(Clone, Debug, Default)]
pub struct ObservedBackup {
    pub config_map: Option<ConfigMap>,
    pub repo_host: Option<StatefulSet>,
    pub repo_host_service: Option<Service>,
    pub stanza_job: Option<Job>,
    /// The Cluster named by `spec.bootstrap.restore.cluster`, when there is one.
    pub restore_source: Option<Cluster>,
    /// `pg_stat_archiver` of the primary, when it could be read.
    pub archiver: Option<ArchiverStats>,
    /// How the restore's recovery ended (from the primary's timeline history), when read.
    pub recovery_outcome: Option<String>,
}

/// A row of `pg_stat_archiver`; times in microseconds since the epoch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ArchiverStats {
    pub archived_count: i64,
    pub last_archived_wal: Option<String>,
    pub last_archived_micros: Option<i64>,
    pub failed_count: i64,
    pub last_failed_wal: Option<String>,
    pub last_failed_micros: Option<i64>,
}

impl ArchiverStats {
    /// Whether the most recent archive attempt failed.
    pub fn failing(&self) -> bool {
        match (self.last_failed_micros, self.last_archived_micros) {
            (Some(failed), Some(archived)) => failed > archived,
            (Some(_), None) => true,
            _ => false,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// I/O
// ---------------------------------------------------------------------------------------------

/// Reads this module's children, the restore source and — when `data_plane` — the primary's
/// archiver statistics and recovery outcome.
/// Reads the backup children from the API and, through `primary` (the SQL session the
/// controller already holds to a Ready Cluster's primary), the archiver and recovery state.
pub async fn observe(
    cluster: &Cluster,
    client: &kube::Client,
    primary: Option<Arc<tokio_postgres::Client>>,
) -> Result<ObservedBackup, Error> {
    let ns = namespace(cluster);
    let name = cluster_name(cluster);
    let observe = |what: &'static str| {
        move |source| Error::Observe {
            what,
            source: Box::new(source),
        }
    };
    let mut observed = ObservedBackup::default();
    let needs_repo = cluster.spec.has_repository();
    // Read even without a repository: a repository removed from the spec leaves them behind.
    observed.config_map = Api::<ConfigMap>::namespaced(client.clone(), &ns)
        .get_opt(&names::pgbackrest_config(&name))
        .await
        .map_err(observe("ConfigMap"))?;
    observed.repo_host = Api::<StatefulSet>::namespaced(client.clone(), &ns)
        .get_opt(&names::repo_host(&name))
        .await
        .map_err(observe("StatefulSet"))?;
    observed.repo_host_service = Api::<Service>::namespaced(client.clone(), &ns)
        .get_opt(&names::repo_host(&name))
        .await
        .map_err(observe("Service"))?;
    observed.stanza_job = Api::<Job>::namespaced(client.clone(), &ns)
        .get_opt(&stanza_job_name(&name))
        .await
        .map_err(observe("Job"))?;
    if let Some(source) = restore_spec(cluster).and_then(|r| r.cluster.clone()) {
        observed.restore_source = Api::<Cluster>::namespaced(client.clone(), &ns)
            .get_opt(&source)
            .await
            .map_err(observe("the restore source Cluster"))?;
    }
    if let Some(primary) = primary {
        let wants_recovery = restore_spec(cluster).is_some()
            && cluster
                .status
                .as_ref()
                .is_none_or(|s| s.recovery_target_reached.is_none());
        if needs_repo || wants_recovery {
            match query_primary(&primary, needs_repo, wants_recovery).await {
                Ok((archiver, recovery)) => {
                    observed.archiver = archiver;
                    observed.recovery_outcome = recovery;
                }
                Err(error) => tracing::debug!(%error, "could not query the primary"),
            }
        }
    }
    Ok(observed)
}

pub(crate) async fn query_primary(
    pg: &tokio_postgres::Client,
    archiver: bool,
    recovery: bool,
) -> Result<(Option<ArchiverStats>, Option<String>), String> {
    let stats = if archiver {
        let row = pg
            .query_one(ARCHIVER_QUERY, &[])
            .await
            .map_err(|e| e.to_string())?;
        Some(ArchiverStats {
            archived_count: row.get(0),
            last_archived_wal: row.get(1),
            last_archived_micros: row.get(2),
            failed_count: row.get(3),
            last_failed_wal: row.get(4),
            last_failed_micros: row.get(5),
        })
    } else {
        None
    };
    let outcome = if recovery {
        let row = pg
            .query_one(HISTORY_QUERY, &[])
            .await
            .map_err(|e| e.to_string())?;
        let timeline: i64 = row.get(0);
        let history: Option<String> = row.get(1);
        history.and_then(|h| recovery_outcome(timeline, &h))
    } else {
        None
    };
    Ok((stats, outcome))
}

/// `pg_stat_archiver`, times as microseconds since the epoch.
pub const ARCHIVER_QUERY: &str = "SELECT archived_count, last_archived_wal, \
     (extract(epoch FROM last_archived_time) * 1000000)::int8, failed_count, last_failed_wal, \
     (extract(epoch FROM last_failed_time) * 1000000)::int8 FROM pg_stat_archiver";

/// The timeline the primary writes (from its current WAL file name: the checkpoint's may still
/// be the old one right after a promotion) and that timeline's history file (absent on
/// timeline 1).
pub const HISTORY_QUERY: &str = "SELECT ('x' || tli)::bit(32)::int8, \
     pg_read_file('pg_wal/' || tli || '.history', 0, 1048576, true) \
     FROM (SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8) AS tli) AS current";

/// How recovery ended, from a timeline history file's last line
/// (`<parent>\t<switch LSN>\t<reason>`): `timeline 2 began at 0/3000A28 after recovery
/// stopped: before 2026-11-22 10:15:00+00`.
pub fn recovery_outcome(timeline: i64, history: &str) -> Option<String> {
    let line = history.lines().rev().find(|l| !l.trim().is_empty())?;
    let mut fields = line.split('\t');
    let _parent = fields.next()?;
    let lsn = fields.next()?.trim();
    let reason = fields.next().unwrap_or("").trim();
    let text = format!("timeline {timeline} began at {lsn} after recovery stopped: {reason}");
    Some(text.chars().take(256).collect())
}

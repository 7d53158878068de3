//! The Cluster side of backups: pgBackRest's configuration, the repository host for volume
//! repositories, the stanza, the `ContinuousArchiving` condition, and the restore bootstrap's
//! pod additions.
//!
//! ```text
//!  Cluster.spec.backup ─► ConfigMap <cluster>-pgbackrest-config
//!                           pgbackrest.conf  instances (postgres: archive-push/-get; pgbackrest: server)
//!                           repo-host.conf   the repository host (volume repositories only)
//!                           stanza.conf      the stanza Job (repositories local, pg1-host from env)
//!                           restore.conf     the restore source (spec.bootstrap.restore only)
//!                      ─► StatefulSet + Service <cluster>-repo-host   (volume repositories)
//!                           one pod running `pgbackrest server`, PVC `repo-<cluster>-repo-host-0`
//!                           mounted at /pgbackrest; repository N lives in /pgbackrest/repoN/<path>
//!                      ─► Job <cluster>-stanza  once the Cluster is Ready: stanza-create + check
//!                           re-created when the repositories change, retried after a failure
//!  primary (SQL) ─► pg_stat_archiver ─► ContinuousArchiving condition
//!                ─► timeline history  ─► status.recoveryTargetReached (restored Clusters)
//! ```
//!
//! # Why a Job creates the stanza
//!
//! `stanza-create` must run where the repositories are local and PostgreSQL is reachable as
//! the primary. A one-shot Job, owned by the Cluster and named `<cluster>-stanza`, does that
//! with the same settings as a backup Job (the repositories mounted or reached directly, the
//! primary through its pgBackRest TLS server). Unlike a sidecar loop on every instance, it
//! runs once, against the primary only, leaves its outcome and log in the API (`kubectl logs
//! job/<cluster>-stanza`), and needs no extra process in the database pods. It is created
//! after the Cluster first becomes Ready, re-created when the repository configuration
//! changes (an annotation carries its hash), and retried [`STANZA_RETRY_AFTER`] after a
//! failure — a credentials Secret fixed in place changes nothing in the spec. `stanza-create`
//! is idempotent (it checks an existing stanza against the database), and the Job ends with
//! `pgbackrest check`, which forces a WAL switch and waits for the segment to arrive in every
//! repository: a succeeded Job means archiving worked end to end at that moment.
//!
//! # ContinuousArchiving
//!
//! No condition without a repository. `False/StanzaMissing` until the stanza Job succeeded;
//! then PostgreSQL's own `pg_stat_archiver` on the primary decides: a failure more recent
//! than the last success is `False/ArchiveFailing` with the segment and time, anything else
//! `True/Archiving`. When the primary cannot be queried, the last verdict stands.

pub mod archiving;
pub mod repo_host;
pub mod settings;
pub mod sidecar;
pub mod stanza;

pub use archiving::{BackupEvent, archiving_condition, transitions};
pub use repo_host::desired_repo_host;
pub use settings::{
    COMPONENT, REPO_CLAIM, REPO_HOST_COMPONENT, REPO_HOST_CONFIG_KEY, REPOSITORIES_HASH_ANNOTATION,
    STANZA_CONFIG_KEY, WAITING_FOR_SOURCE, desired_config_map, instance_settings,
    repositories_hash, spec_problem,
};
pub use sidecar::{
    InstancePod, RestorePod, add_restore_pod, instance_pod, restore_pod, sidecar_container,
};
pub use stanza::{
    STANZA_MISSING, STANZA_RETRY_AFTER, StanzaAction, StanzaState, desired_stanza_job, plan_stanza,
    stanza_script,
};

use crate::observe::backup::ObservedBackup;
use crate::shared::layout::restore_spec;
use crate::shared::pod::Images;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use tusk_api::condition::{DesiredCondition, find_condition, types};
use tusk_api::{Cluster, ClusterStatus};

/// Everything this module wants to exist, and its verdicts.
#[derive(Clone, Debug)]
pub struct DesiredBackup {
    /// `None` when the Cluster has no repository and restores nothing (it is deleted).
    pub config_map: Option<ConfigMap>,
    /// `None` without a volume repository (it is deleted; its PVC is kept).
    pub repo_host: Option<StatefulSet>,
    pub repo_host_service: Option<Service>,
    pub stanza: StanzaAction,
    pub stanza_state: StanzaState,
    /// The ContinuousArchiving condition; `None` removes it.
    pub archiving: Option<DesiredCondition>,
    /// Pod additions of the restore bootstrap (applied after the restart hash: they only
    /// matter while the Cluster bootstraps, so they never restart a running instance).
    pub restore_pod: Option<RestorePod>,
    /// What to record as `status.recoveryTargetReached`.
    pub recovery_target_reached: Option<String>,
}

impl DesiredBackup {
    /// The objects this module applies, for golden files and `tusk-operator render`.
    pub fn objects(&self) -> Vec<serde_json::Value> {
        let mut objects = Vec::new();
        objects.extend(
            self.config_map
                .iter()
                .filter_map(|o| serde_json::to_value(o).ok()),
        );
        objects.extend(
            self.repo_host_service
                .iter()
                .filter_map(|o| serde_json::to_value(o).ok()),
        );
        objects.extend(
            self.repo_host
                .iter()
                .filter_map(|o| serde_json::to_value(o).ok()),
        );
        objects
    }
}

/// The whole pure plan of this module. `status` is the Cluster status computed so far in this
/// pass (Ready and the primary decide when the stanza Job may run).
pub fn plan(
    cluster: &Cluster,
    observed: &ObservedBackup,
    images: &Images,
    status: &ClusterStatus,
    now: &Time,
) -> DesiredBackup {
    let ready = tusk_api::condition::is_ready(&status.conditions, None);
    let primary = status.current_primary.as_deref().filter(|_| ready);
    let (stanza_state, stanza) = if cluster.spec.has_repository() {
        plan_stanza(cluster, images, observed, primary, now)
    } else {
        let action = match &observed.stanza_job {
            Some(_) => StanzaAction::Delete("the Cluster has no repository any more".to_owned()),
            None => StanzaAction::Keep,
        };
        (StanzaState::Waiting("no repository".to_owned()), action)
    };
    let previous = cluster
        .status
        .as_ref()
        .and_then(|s| find_condition(&s.conditions, types::CONTINUOUS_ARCHIVING));
    let archiving =
        archiving_condition(cluster, &stanza_state, observed.archiver.as_ref(), previous);
    let (repo_host, repo_host_service) =
        match desired_repo_host(cluster, images, observed.repo_host.as_ref()) {
            Some((sts, service)) => (Some(sts), Some(service)),
            None => (None, None),
        };
    let recovery_target_reached = status.recovery_target_reached.clone().or_else(|| {
        restore_spec(cluster)
            .and(observed.recovery_outcome.clone())
            .filter(|_| ready)
    });
    DesiredBackup {
        config_map: desired_config_map(cluster, observed),
        repo_host,
        repo_host_service,
        stanza,
        stanza_state,
        archiving,
        restore_pod: restore_pod(cluster, observed),
        recovery_target_reached,
    }
}

/// Writes this module's verdicts into the status computed so far.
pub fn update_status(
    status: &mut ClusterStatus,
    desired: &DesiredBackup,
    generation: Option<i64>,
    now: Time,
) {
    match &desired.archiving {
        Some(condition) => {
            tusk_api::condition::set_condition(
                &mut status.conditions,
                condition.clone(),
                generation,
                now,
            );
        }
        None => {
            tusk_api::condition::remove_condition(
                &mut status.conditions,
                types::CONTINUOUS_ARCHIVING,
            );
        }
    }
    status.recovery_target_reached = desired.recovery_target_reached.clone();
}

#[cfg(test)]
mod tests;

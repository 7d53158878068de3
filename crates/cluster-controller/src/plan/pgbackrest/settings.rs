//! pgBackRest's settings for a Cluster: the ConfigMap `<cluster>-pgbackrest-config` with
//! the instances', repository host's, stanza Job's and restore source's files, the volumes that
//! mount them, and the checks of `spec.backup` and `spec.bootstrap.restore` the schema cannot make.

use crate::observe::backup::ObservedBackup;
use crate::plan::status::SpecProblem;
use crate::shared::layout::restore_spec;
use crate::shared::meta::{child_meta, cluster_name};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, KeyToPath, SecretVolumeSource, Volume,
};
use std::collections::BTreeMap;
use tusk_api::Cluster;
use tusk_api::cluster::{RestoreSpec, reasons};
use tusk_api::names::{self};
use tusk_pgbackrest::Settings;
use tusk_pgbackrest::restore::{self, RestoreSource};
use tusk_runtime::apply::content_hash;

/// Component label of the repository host and the stanza Job.
pub const COMPONENT: &str = "backup";

/// Value of `app.kubernetes.io/component` on the repository host pod.
pub const REPO_HOST_COMPONENT: &str = "repo-host";

/// ConfigMap key of the repository host's configuration.
pub const REPO_HOST_CONFIG_KEY: &str = "repo-host.conf";

/// ConfigMap key of the stanza Job's configuration (`pg1-host` comes from the Job's env).
pub const STANZA_CONFIG_KEY: &str = "stanza.conf";

/// The repository host's volume claim template: PVC `repo-<cluster>-repo-host-0`.
pub const REPO_CLAIM: &str = "repo";

/// Annotation on the stanza Job: the hash of the repository configuration it ran with.
pub const REPOSITORIES_HASH_ANNOTATION: &str = "tusk.dev/repositories-hash";

/// The Ready reason of a restoring Cluster whose source Cluster does not exist (yet); the
/// controller looks again soon.
pub const WAITING_FOR_SOURCE: &str = "RestoreSourceNotFound";

/// Volume names in pods.
pub(crate) const CONFIG_VOLUME: &str = "pgbackrest-config";

pub(crate) const TLS_VOLUME: &str = "pgbackrest-tls";

pub(crate) const RESTORE_CONFIG_VOLUME: &str = "pgbackrest-restore-config";

pub(crate) const SOURCE_TLS_VOLUME: &str = "pgbackrest-source-tls";

/// What the API server cannot check about backups and restore; nothing is applied while one
/// stands. A missing restore source only blocks a Cluster that has no instance yet: once it
/// runs, the source no longer matters.
pub fn spec_problem(
    cluster: &Cluster,
    observed: &ObservedBackup,
    has_instances: bool,
) -> Option<SpecProblem> {
    let problem = |reason: &'static str, message: String| SpecProblem { reason, message };
    if cluster.spec.has_repository() {
        if let Err(error) = tusk_pgbackrest::instance_settings(cluster) {
            return Some(problem(error.reason(), error.to_string()));
        }
        let volumes = cluster
            .spec
            .backup
            .iter()
            .flat_map(|b| b.repositories.iter())
            .filter(|r| r.volume.is_some())
            .count();
        if volumes > 1 {
            return Some(problem(
                reasons::INVALID_SPEC,
                "spec.backup.repositories has more than one volume repository: they would share the repository host's volume and add no safety; keep one volume and use an object store (s3, gcs, azure) for a second copy".to_owned(),
            ));
        }
    }
    if let Some(spec) = restore_spec(cluster) {
        if let Err(error) = restore::target_options(spec) {
            return Some(problem(error.reason(), error.to_string()));
        }
        // Once instances exist the restore is done or under way: what happens to the source
        // later (deleted, its repository removed, upgraded to another major) must not stop the
        // new Cluster. Only its own repositories are still checked against the source.
        match resolve_restore(cluster, spec, observed) {
            Ok(source) => {
                let settings = if has_instances {
                    Ok(())
                } else {
                    restore::restore_settings(cluster, &source).map(|_| ())
                };
                if let Err(error) = restore::check_own_paths(cluster, &source).and(settings) {
                    return Some(problem(error.reason(), error.to_string()));
                }
            }
            Err(_) if has_instances => {}
            Err(error) => return Some(problem(error.reason(), error.to_string())),
        }
    }
    None
}

pub(crate) fn resolve_restore(
    cluster: &Cluster,
    spec: &RestoreSpec,
    observed: &ObservedBackup,
) -> Result<RestoreSource, restore::RestoreError> {
    restore::resolve_source(cluster, spec, observed.restore_source.as_ref())
}

/// The instance's pgBackRest settings, when the Cluster has a repository.
pub fn instance_settings(cluster: &Cluster) -> Option<Settings> {
    if !cluster.spec.has_repository() {
        return None;
    }
    tusk_pgbackrest::instance_settings(cluster).ok()
}

/// Whether the instance pods mount the pgBackRest ConfigMap.
pub(crate) fn needs_config_map(cluster: &Cluster) -> bool {
    cluster.spec.has_repository() || restore_spec(cluster).is_some()
}

/// The pgBackRest ConfigMap: one key per process kind.
pub fn desired_config_map(cluster: &Cluster, observed: &ObservedBackup) -> Option<ConfigMap> {
    if !needs_config_map(cluster) {
        return None;
    }
    let name = cluster_name(cluster);
    let mut data = BTreeMap::new();
    if let Some(settings) = instance_settings(cluster) {
        data.insert(tusk_pgbackrest::CONFIG_KEY.to_owned(), settings.to_ini());
    }
    if cluster.spec.has_repository() {
        if let Ok(Some(settings)) = tusk_pgbackrest::repo_host_settings(cluster) {
            data.insert(REPO_HOST_CONFIG_KEY.to_owned(), settings.to_ini());
        }
        if let Some(settings) = stanza_settings(cluster) {
            data.insert(STANZA_CONFIG_KEY.to_owned(), settings.to_ini());
        }
    }
    if let Some(spec) = restore_spec(cluster)
        && let Ok(source) = resolve_restore(cluster, spec, observed)
        && let Ok(settings) = restore::restore_settings(cluster, &source)
    {
        data.insert(restore::RESTORE_CONFIG_KEY.to_owned(), settings.to_ini());
    }
    Some(ConfigMap {
        metadata: child_meta(cluster, names::pgbackrest_config(&name), COMPONENT),
        data: Some(data),
        ..ConfigMap::default()
    })
}

/// The stanza Job's settings without `pg1-host` (set per Job from the primary's name, so the
/// ConfigMap does not change on a switchover).
pub(crate) fn stanza_settings(cluster: &Cluster) -> Option<Settings> {
    let mut settings = tusk_pgbackrest::backup_job_settings(cluster, "primary").ok()?;
    settings.stanza.remove("pg1-host");
    Some(settings)
}

pub(crate) fn config_volume(cluster: &Cluster, name: &str, key: &str, optional: bool) -> Volume {
    Volume {
        name: name.to_owned(),
        config_map: Some(ConfigMapVolumeSource {
            name: names::pgbackrest_config(&cluster_name(cluster)),
            items: Some(vec![KeyToPath {
                key: key.to_owned(),
                path: tusk_pgbackrest::CONFIG_KEY.to_owned(),
                mode: None,
            }]),
            optional: optional.then_some(true),
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    }
}

pub(crate) fn tls_volume(secret: String, optional: bool) -> Volume {
    Volume {
        name: if optional {
            SOURCE_TLS_VOLUME
        } else {
            TLS_VOLUME
        }
        .to_owned(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret),
            default_mode: Some(0o440),
            optional: optional.then_some(true),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Stanza Job
// ---------------------------------------------------------------------------------------------

/// The hash of everything the stanza Job ran with (its configuration and environment); a new
/// value re-runs it.
pub fn repositories_hash(cluster: &Cluster) -> Option<String> {
    let settings = stanza_settings(cluster)?;
    let env: Vec<(String, String)> = settings
        .secret_options()
        .map(|(option, secret)| (option.to_owned(), format!("{}/{}", secret.name, secret.key)))
        .collect();
    // The major is part of it: after a PGUpgrade the stanza must be upgraded.
    Some(content_hash(&serde_json::json!({
        "ini": settings.to_ini(),
        "secrets": env,
        "postgresVersion": cluster.spec.postgres_version,
    })))
}

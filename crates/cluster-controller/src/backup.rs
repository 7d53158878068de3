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

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Affinity, ConfigMap, ConfigMapVolumeSource, Container, EnvVar, KeyToPath, PodAffinity,
    PodAffinityTerm, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, SeccompProfile,
    SecretVolumeSource, Service, ServicePort, ServiceSpec, TCPSocketAction, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{DeleteParams, PropagationPolicy};
use kube::{Api, ResourceExt};
use tusk_api::cluster::{RestoreSpec, reasons};
use tusk_api::condition::{ConditionStatus, DesiredCondition, find_condition, types};
use tusk_api::names::{self, PGBACKREST_PORT};
use tusk_api::{Cluster, ClusterStatus, labels};
use tusk_pgbackrest::Settings;
use tusk_pgbackrest::restore::{self, RestoreSource};
use tusk_runtime::apply::{self, content_hash};

use crate::children::{
    Images, POSTGRES_UID, claim, empty_dir, mount, port, pull_policy, restricted_container_security,
};
use crate::error::Error;
use crate::meta::{child_meta, cluster_name, namespace};
use crate::status::SpecProblem;

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
/// How long after a failed stanza Job it is tried again.
pub const STANZA_RETRY_AFTER: Duration = Duration::from_secs(300);
/// The Ready reason of a restoring Cluster whose source Cluster does not exist (yet); the
/// controller looks again soon.
pub const WAITING_FOR_SOURCE: &str = "RestoreSourceNotFound";
/// Condition reason while the stanza is not (yet) created.
pub const STANZA_MISSING: &str = "StanzaMissing";
/// Volume names in pods.
const CONFIG_VOLUME: &str = "pgbackrest-config";
const TLS_VOLUME: &str = "pgbackrest-tls";
const RESTORE_CONFIG_VOLUME: &str = "pgbackrest-restore-config";
const SOURCE_TLS_VOLUME: &str = "pgbackrest-source-tls";

/// The stanza Job of a Cluster: `<cluster>-stanza`.
pub fn stanza_job_name(cluster: &str) -> String {
    format!("{cluster}-stanza")
}

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

/// Where the stanza stands, from the stanza Job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StanzaState {
    /// No Job yet; the message says what it waits for.
    Waiting(String),
    Running,
    Succeeded,
    /// The Job failed; its message.
    Failed(String),
}

/// What to do with the stanza Job.
#[derive(Clone, Debug, PartialEq)]
pub enum StanzaAction {
    Keep,
    Create(Box<Job>),
    /// Delete it (the next pass creates a new one); the reason goes into an event.
    Delete(String),
}

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

/// What a restoring Cluster's `postgres` container needs besides its own pgBackRest setup.
#[derive(Clone, Debug, PartialEq)]
pub struct RestorePod {
    pub env: Vec<EnvVar>,
    pub volumes: Vec<Volume>,
    pub mounts: Vec<VolumeMount>,
}

// ---------------------------------------------------------------------------------------------
// Settings
// ---------------------------------------------------------------------------------------------

/// The restore spec, when the Cluster bootstraps from a backup.
pub fn restore_spec(cluster: &Cluster) -> Option<&RestoreSpec> {
    cluster.spec.bootstrap.as_ref()?.restore.as_ref()
}

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

fn resolve_restore(
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
fn needs_config_map(cluster: &Cluster) -> bool {
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
fn stanza_settings(cluster: &Cluster) -> Option<Settings> {
    let mut settings = tusk_pgbackrest::backup_job_settings(cluster, "primary").ok()?;
    settings.stanza.remove("pg1-host");
    Some(settings)
}

fn config_volume(cluster: &Cluster, name: &str, key: &str, optional: bool) -> Volume {
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

fn tls_volume(secret: String, optional: bool) -> Volume {
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

/// What the instance pod's containers need for pgBackRest: the configuration at
/// [`tusk_pgbackrest::CONFIG_DIR`], the certificates at [`tusk_pgbackrest::TLS_DIR`], secret
/// options as environment variables and secret files as mounts.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct InstancePod {
    /// For both the `postgres` and the `pgbackrest` container.
    pub env: Vec<EnvVar>,
    /// Extra for the `pgbackrest` container (the superuser password for the socket).
    pub server_env: Vec<EnvVar>,
    pub mounts: Vec<VolumeMount>,
    /// Volumes besides the `pgbackrest-tls` Secret volume the pod already has.
    pub volumes: Vec<Volume>,
}

/// The instance pod's pgBackRest additions; `None` without a repository (a restoring Cluster
/// without a repository gets only [`RestorePod`]).
pub fn instance_pod(cluster: &Cluster) -> Option<InstancePod> {
    let settings = instance_settings(cluster)?;
    let mut mounts = vec![
        mount(CONFIG_VOLUME, tusk_pgbackrest::CONFIG_DIR, true),
        mount(TLS_VOLUME, tusk_pgbackrest::TLS_DIR, true),
    ];
    mounts.extend(settings.volume_mounts());
    let mut volumes = vec![config_volume(
        cluster,
        CONFIG_VOLUME,
        tusk_pgbackrest::CONFIG_KEY,
        false,
    )];
    volumes.extend(settings.volumes());
    Some(InstancePod {
        env: settings.env(),
        server_env: vec![tusk_pgbackrest::pg_password_env(cluster)],
        mounts,
        volumes,
    })
}

/// The restore bootstrap's additions to the `postgres` container: the restore configuration,
/// the source's secret options (optional, so pods start after the source is gone) and, for a
/// volume source, the source Cluster's client certificate.
pub fn restore_pod(cluster: &Cluster, observed: &ObservedBackup) -> Option<RestorePod> {
    let spec = restore_spec(cluster)?;
    let source = resolve_restore(cluster, spec, observed).ok()?;
    let settings = restore::restore_settings(cluster, &source).ok()?;
    let mut volumes = vec![config_volume(
        cluster,
        RESTORE_CONFIG_VOLUME,
        restore::RESTORE_CONFIG_KEY,
        true,
    )];
    let mut mounts = vec![mount(
        RESTORE_CONFIG_VOLUME,
        restore::RESTORE_CONFIG_DIR,
        true,
    )];
    if let Some(secret) = restore::source_tls_secret(&source) {
        volumes.push(tls_volume(secret, true));
        mounts.push(mount(SOURCE_TLS_VOLUME, restore::SOURCE_TLS_DIR, true));
    }
    for mut volume in settings.volumes() {
        if let Some(secret) = volume.secret.as_mut() {
            secret.optional = Some(true);
        }
        volumes.push(volume);
    }
    mounts.extend(settings.volume_mounts());
    Some(RestorePod {
        env: restore::optional_env(settings.env()),
        volumes,
        mounts,
    })
}

/// Adds the restore bootstrap's pieces to an instance StatefulSet.
pub fn add_restore_pod(statefulset: &mut StatefulSet, restore: &RestorePod) {
    let Some(pod) = statefulset
        .spec
        .as_mut()
        .and_then(|spec| spec.template.spec.as_mut())
    else {
        return;
    };
    pod.volumes
        .get_or_insert_with(Vec::new)
        .extend(restore.volumes.iter().cloned());
    if let Some(postgres) = pod.containers.iter_mut().find(|c| c.name == "postgres") {
        postgres
            .env
            .get_or_insert_with(Vec::new)
            .extend(restore.env.iter().cloned());
        postgres
            .volume_mounts
            .get_or_insert_with(Vec::new)
            .extend(restore.mounts.iter().cloned());
    }
}

// ---------------------------------------------------------------------------------------------
// Repository host
// ---------------------------------------------------------------------------------------------

/// Labels selecting the repository host pod.
pub fn repo_host_selector(cluster: &Cluster) -> BTreeMap<String, String> {
    BTreeMap::from([
        (labels::CLUSTER.to_owned(), cluster_name(cluster)),
        (labels::COMPONENT.to_owned(), REPO_HOST_COMPONENT.to_owned()),
    ])
}

fn pod_security() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(POSTGRES_UID),
        run_as_group: Some(POSTGRES_UID),
        fs_group: Some(POSTGRES_UID),
        fs_group_change_policy: Some("OnRootMismatch".to_owned()),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_owned(),
            ..SeccompProfile::default()
        }),
        ..PodSecurityContext::default()
    }
}

fn tcp_probe(period: i32) -> Probe {
    Probe {
        tcp_socket: Some(TCPSocketAction {
            port: IntOrString::Int(i32::from(PGBACKREST_PORT)),
            ..TCPSocketAction::default()
        }),
        period_seconds: Some(period),
        ..Probe::default()
    }
}

/// The repository host: one pod serving the Cluster's volume repository over pgBackRest's TLS
/// protocol (instances archive to it). `observed` keeps the claim template as created: a
/// StatefulSet's claim templates cannot change (grow the PVC itself instead).
pub fn desired_repo_host(
    cluster: &Cluster,
    images: &Images,
    observed: Option<&StatefulSet>,
) -> Option<(StatefulSet, Service)> {
    if !cluster.spec.has_repository() {
        return None;
    }
    let settings = tusk_pgbackrest::repo_host_settings(cluster).ok()??;
    let volume = cluster
        .spec
        .backup
        .iter()
        .flat_map(|b| b.repositories.iter())
        .find_map(|r| r.volume.as_ref())?;
    let name = cluster_name(cluster);
    let host = names::repo_host(&name);
    let spec = &cluster.spec;
    let mut pod_labels = labels::cluster_child_labels(&name, REPO_HOST_COMPONENT);
    pod_labels.extend(repo_host_selector(cluster));

    let mut mounts = vec![
        mount(CONFIG_VOLUME, tusk_pgbackrest::CONFIG_DIR, true),
        mount(TLS_VOLUME, tusk_pgbackrest::TLS_DIR, true),
        mount(REPO_CLAIM, tusk_pgbackrest::REPO_HOST_PATH, false),
        mount("tmp", tusk_pgbackrest::TMP_DIR, false),
    ];
    mounts.extend(settings.volume_mounts());
    let mut volumes = vec![
        config_volume(cluster, CONFIG_VOLUME, REPO_HOST_CONFIG_KEY, false),
        tls_volume(names::pgbackrest_secret(&name), false),
        empty_dir("tmp", None),
    ];
    volumes.extend(settings.volumes());
    let env = settings.env();
    let container = Container {
        name: "pgbackrest".to_owned(),
        image: Some(images.postgres_image(cluster)),
        image_pull_policy: spec.image_pull_policy.map(pull_policy),
        command: Some(tusk_pgbackrest::server_command()),
        env: (!env.is_empty()).then_some(env),
        ports: Some(vec![port("pgbackrest", PGBACKREST_PORT)]),
        readiness_probe: Some(tcp_probe(10)),
        liveness_probe: Some(tcp_probe(30)),
        resources: spec.backup.as_ref().and_then(|b| b.job_resources.clone()),
        security_context: Some(restricted_container_security()),
        volume_mounts: Some(mounts),
        ..Container::default()
    };
    let claims = observed
        .and_then(|sts| sts.spec.as_ref())
        .and_then(|s| s.volume_claim_templates.clone())
        .unwrap_or_else(|| {
            vec![claim(
                REPO_CLAIM,
                &volume.size,
                volume.storage_class_name.as_deref(),
            )]
        });
    let statefulset = StatefulSet {
        metadata: child_meta(cluster, host.clone(), REPO_HOST_COMPONENT),
        spec: Some(StatefulSetSpec {
            replicas: Some(1),
            service_name: Some(host.clone()),
            selector: LabelSelector {
                match_labels: Some(repo_host_selector(cluster)),
                ..LabelSelector::default()
            },
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some("Retain".to_owned()),
                    when_scaled: Some("Retain".to_owned()),
                },
            ),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    security_context: Some(pod_security()),
                    containers: vec![container],
                    volumes: Some(volumes),
                    node_selector: (!spec.scheduling.node_selector.is_empty())
                        .then(|| spec.scheduling.node_selector.clone()),
                    tolerations: (!spec.scheduling.tolerations.is_empty())
                        .then(|| spec.scheduling.tolerations.clone()),
                    image_pull_secrets: (!spec.image_pull_secrets.is_empty())
                        .then(|| spec.image_pull_secrets.clone()),
                    termination_grace_period_seconds: Some(30),
                    ..PodSpec::default()
                }),
            },
            volume_claim_templates: Some(claims),
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    };
    let service = Service {
        metadata: child_meta(cluster, host, REPO_HOST_COMPONENT),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_owned()),
            selector: Some(repo_host_selector(cluster)),
            ports: Some(vec![ServicePort {
                name: Some("pgbackrest".to_owned()),
                port: i32::from(PGBACKREST_PORT),
                target_port: Some(IntOrString::Int(i32::from(PGBACKREST_PORT))),
                protocol: Some("TCP".to_owned()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    };
    Some((statefulset, service))
}

fn repo_host_ready(observed: Option<&StatefulSet>) -> bool {
    observed
        .and_then(|sts| sts.status.as_ref())
        .and_then(|status| status.ready_replicas)
        .is_some_and(|ready| ready >= 1)
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

/// The stanza Job's shell script: create the stanza (idempotent), then check archiving.
///
/// After a major upgrade (PGUpgrade) the repositories still describe the old major and
/// `stanza-create` refuses the new system identifier. Only then — when the newest database
/// version recorded in the stanza is older than the major the Cluster now runs — does the
/// script run `stanza-upgrade`. Any other mismatch (for example two Clusters pointed at one
/// repository path) keeps failing, so a stanza is never taken over by another database.
pub fn stanza_script(postgres_version: i32) -> String {
    let create = tusk_pgbackrest::stanza_create_command().join(" ");
    let info = format!(
        "pgbackrest --stanza={} --output=json info",
        tusk_pgbackrest::STANZA
    );
    let upgrade = format!(
        "pgbackrest --stanza={} stanza-upgrade",
        tusk_pgbackrest::STANZA
    );
    let check = tusk_pgbackrest::check_command().join(" ");
    format!(
        "{create} || {{ stored=$({info} | grep -o '\"version\":\"[0-9]*\"' | tr -cd '0-9\\n' | sort -n | tail -n 1); \
if [ -n \"$stored\" ] && [ \"$stored\" -lt {postgres_version} ]; then \
echo \"the stanza describes PostgreSQL $stored and the Cluster runs {postgres_version}: upgrading the stanza\"; \
{upgrade} || exit 1; else exit 1; fi; }} && exec {check}"
    )
}

/// The stanza Job, run against `primary` (an instance name).
pub fn desired_stanza_job(cluster: &Cluster, images: &Images, primary: &str) -> Option<Job> {
    let settings = stanza_settings(cluster)?;
    let hash = repositories_hash(cluster)?;
    let name = cluster_name(cluster);
    let ns = namespace(cluster);
    let has_volume = cluster
        .spec
        .backup
        .iter()
        .flat_map(|b| b.repositories.iter())
        .any(|r| r.volume.is_some());
    let mut env = vec![EnvVar {
        name: tusk_pgbackrest::env_var_name("pg1-host"),
        value: Some(tusk_pgbackrest::instance_address(&name, primary, &ns)),
        ..EnvVar::default()
    }];
    env.extend(settings.env());
    let mut mounts = vec![
        mount(CONFIG_VOLUME, tusk_pgbackrest::CONFIG_DIR, true),
        mount(TLS_VOLUME, tusk_pgbackrest::TLS_DIR, true),
        mount("tmp", tusk_pgbackrest::TMP_DIR, false),
    ];
    mounts.extend(settings.volume_mounts());
    let mut volumes = vec![
        config_volume(cluster, CONFIG_VOLUME, STANZA_CONFIG_KEY, false),
        tls_volume(names::pgbackrest_secret(&name), false),
        empty_dir("tmp", None),
    ];
    volumes.extend(settings.volumes());
    let mut affinity = None;
    if has_volume {
        mounts.push(mount(REPO_CLAIM, tusk_pgbackrest::REPO_HOST_PATH, false));
        volumes.push(Volume {
            name: REPO_CLAIM.to_owned(),
            persistent_volume_claim: Some(
                k8s_openapi::api::core::v1::PersistentVolumeClaimVolumeSource {
                    claim_name: names::statefulset_claim(REPO_CLAIM, &names::repo_host(&name)),
                    read_only: None,
                },
            ),
            ..Volume::default()
        });
        // The volume is ReadWriteOnce: run on the repository host's node.
        affinity = Some(Affinity {
            pod_affinity: Some(PodAffinity {
                required_during_scheduling_ignored_during_execution: Some(vec![PodAffinityTerm {
                    label_selector: Some(LabelSelector {
                        match_labels: Some(repo_host_selector(cluster)),
                        ..LabelSelector::default()
                    }),
                    topology_key: "kubernetes.io/hostname".to_owned(),
                    ..PodAffinityTerm::default()
                }]),
                ..PodAffinity::default()
            }),
            ..Affinity::default()
        });
    }
    let script = stanza_script(cluster.spec.postgres_version);
    let spec = &cluster.spec;
    let pod_labels = labels::cluster_child_labels(&name, COMPONENT);
    let mut metadata = child_meta(cluster, stanza_job_name(&name), COMPONENT);
    metadata.annotations = Some(BTreeMap::from([(
        REPOSITORIES_HASH_ANNOTATION.to_owned(),
        hash,
    )]));
    Some(Job {
        metadata,
        spec: Some(JobSpec {
            backoff_limit: Some(2),
            active_deadline_seconds: Some(900),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".to_owned()),
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    security_context: Some(pod_security()),
                    affinity,
                    containers: vec![Container {
                        name: "pgbackrest".to_owned(),
                        image: Some(images.postgres_image(cluster)),
                        image_pull_policy: spec.image_pull_policy.map(pull_policy),
                        command: Some(vec!["/bin/sh".to_owned(), "-c".to_owned(), script]),
                        env: Some(env),
                        resources: spec.backup.as_ref().and_then(|b| b.job_resources.clone()),
                        security_context: Some(restricted_container_security()),
                        volume_mounts: Some(mounts),
                        ..Container::default()
                    }],
                    volumes: Some(volumes),
                    node_selector: (!spec.scheduling.node_selector.is_empty())
                        .then(|| spec.scheduling.node_selector.clone()),
                    tolerations: (!spec.scheduling.tolerations.is_empty())
                        .then(|| spec.scheduling.tolerations.clone()),
                    image_pull_secrets: (!spec.image_pull_secrets.is_empty())
                        .then(|| spec.image_pull_secrets.clone()),
                    ..PodSpec::default()
                }),
            },
            ..JobSpec::default()
        }),
        ..Job::default()
    })
}

/// A Job's finished condition (`Complete` or `Failed`) that is true, with its time.
fn job_finished<'a>(
    job: &'a Job,
    type_: &str,
) -> Option<&'a k8s_openapi::api::batch::v1::JobCondition> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_ && c.status == "True")
}

/// The stanza's state and what to do with its Job, from the Job, the hash the spec wants, and
/// whether the Cluster is Ready with a known primary (and the repository host ready).
pub fn plan_stanza(
    cluster: &Cluster,
    images: &Images,
    observed: &ObservedBackup,
    primary: Option<&str>,
    now: &Time,
) -> (StanzaState, StanzaAction) {
    let job_name = stanza_job_name(&cluster_name(cluster));
    let Some(wanted_hash) = repositories_hash(cluster) else {
        let action = match &observed.stanza_job {
            Some(_) => StanzaAction::Delete("the Cluster has no repository any more".to_owned()),
            None => StanzaAction::Keep,
        };
        return (StanzaState::Waiting("no repository".to_owned()), action);
    };
    if let Some(job) = &observed.stanza_job {
        let hash = job.annotations().get(REPOSITORIES_HASH_ANNOTATION);
        if hash != Some(&wanted_hash) {
            return (
                StanzaState::Waiting(
                    "the repositories changed: creating the stanza again".to_owned(),
                ),
                StanzaAction::Delete("the repositories changed".to_owned()),
            );
        }
        if job_finished(job, "Complete").is_some() {
            return (StanzaState::Succeeded, StanzaAction::Keep);
        }
        if let Some(failed) = job_finished(job, "Failed") {
            let message = failed
                .message
                .clone()
                .or_else(|| failed.reason.clone())
                .unwrap_or_else(|| "the Job failed".to_owned());
            let since = failed
                .last_transition_time
                .as_ref()
                .map(|t| now.0.duration_since(t.0).as_secs_f64())
                .unwrap_or(f64::MAX);
            let action = if since >= STANZA_RETRY_AFTER.as_secs_f64() {
                StanzaAction::Delete(format!("retrying after a failure: {message}"))
            } else {
                StanzaAction::Keep
            };
            return (StanzaState::Failed(message), action);
        }
        return (StanzaState::Running, StanzaAction::Keep);
    }
    let Some(primary) = primary else {
        return (
            StanzaState::Waiting(format!(
                "Job {job_name} creates the stanza once the Cluster is Ready"
            )),
            StanzaAction::Keep,
        );
    };
    let has_volume = cluster
        .spec
        .backup
        .iter()
        .flat_map(|b| b.repositories.iter())
        .any(|r| r.volume.is_some());
    if has_volume && !repo_host_ready(observed.repo_host.as_ref()) {
        return (
            StanzaState::Waiting(format!(
                "waiting for the repository host {} to be ready",
                names::repo_host(&cluster_name(cluster))
            )),
            StanzaAction::Keep,
        );
    }
    match desired_stanza_job(cluster, images, primary) {
        Some(job) => (StanzaState::Running, StanzaAction::Create(Box::new(job))),
        None => (
            StanzaState::Waiting("the backup configuration cannot be rendered".to_owned()),
            StanzaAction::Keep,
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// Conditions and status
// ---------------------------------------------------------------------------------------------

fn micros_text(micros: Option<i64>) -> String {
    micros
        .and_then(|m| jiff::Timestamp::from_microsecond(m).ok())
        .map_or_else(|| "an unknown time".to_owned(), |t| t.to_string())
}

/// The ContinuousArchiving condition (`None`: remove it, the Cluster has no repository).
pub fn archiving_condition(
    cluster: &Cluster,
    stanza: &StanzaState,
    archiver: Option<&ArchiverStats>,
    previous: Option<&Condition>,
) -> Option<DesiredCondition> {
    if !cluster.spec.has_repository() {
        return None;
    }
    let job = stanza_job_name(&cluster_name(cluster));
    let condition = |status: bool, reason: &'static str, message: String| {
        Some(DesiredCondition::new(
            types::CONTINUOUS_ARCHIVING,
            status,
            reason,
            message,
        ))
    };
    match stanza {
        StanzaState::Waiting(why) => {
            return condition(
                false,
                STANZA_MISSING,
                format!(
                    "the pgBackRest stanza does not exist yet ({why}); WAL is not archived until it does"
                ),
            );
        }
        StanzaState::Running => {
            return condition(
                false,
                STANZA_MISSING,
                format!("Job {job} is creating the pgBackRest stanza"),
            );
        }
        StanzaState::Failed(message) => {
            return condition(
                false,
                STANZA_MISSING,
                format!(
                    "creating the pgBackRest stanza failed ({message}); it is retried every {} minutes: see `kubectl logs job/{job}` and check the repository settings and credentials",
                    STANZA_RETRY_AFTER.as_secs() / 60
                ),
            );
        }
        StanzaState::Succeeded => {}
    }
    match archiver {
        Some(stats) if stats.failing() => condition(
            false,
            reasons::ARCHIVE_FAILING,
            format!(
                "archiving WAL segment {} failed at {} ({} failures since the statistics were reset; last success: {} at {}): see the postgres container's log for archive-push errors",
                stats.last_failed_wal.as_deref().unwrap_or("?"),
                micros_text(stats.last_failed_micros),
                stats.failed_count,
                stats.last_archived_wal.as_deref().unwrap_or("none"),
                micros_text(stats.last_archived_micros),
            ),
        ),
        Some(_) => condition(
            true,
            reasons::ARCHIVING,
            "WAL archiving works: the stanza exists and the last archive attempt succeeded"
                .to_owned(),
        ),
        // The primary could not be asked: keep a verdict from the archiver, else trust the
        // stanza Job's `pgbackrest check`.
        None => match previous {
            Some(previous) if previous.reason != STANZA_MISSING => Some(DesiredCondition::new(
                types::CONTINUOUS_ARCHIVING,
                if previous.status == "True" {
                    ConditionStatus::True
                } else {
                    ConditionStatus::False
                },
                if previous.reason == reasons::ARCHIVE_FAILING {
                    reasons::ARCHIVE_FAILING
                } else {
                    reasons::ARCHIVING
                },
                previous.message.clone(),
            )),
            _ => condition(
                true,
                reasons::ARCHIVING,
                format!(
                    "the stanza exists and `pgbackrest check` in Job {job} archived a WAL segment to every repository"
                ),
            ),
        },
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

/// An event for `kubectl describe` on the Cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupEvent {
    /// A Warning (else Normal).
    pub warning: bool,
    pub reason: &'static str,
    pub note: String,
}

fn event(warning: bool, reason: &'static str, note: String) -> BackupEvent {
    BackupEvent {
        warning,
        reason,
        note,
    }
}

/// Events for `kubectl describe`: archiving healthy or failing, the stanza failing, and the
/// recovery target reached.
pub fn transitions(previous: Option<&ClusterStatus>, next: &ClusterStatus) -> Vec<BackupEvent> {
    let mut events = Vec::new();
    let before = previous.and_then(|s| find_condition(&s.conditions, types::CONTINUOUS_ARCHIVING));
    let after = find_condition(&next.conditions, types::CONTINUOUS_ARCHIVING);
    if let Some(after) = after {
        let changed = before.is_none_or(|b| b.status != after.status || b.reason != after.reason);
        if changed {
            match (after.status.as_str(), after.reason.as_str()) {
                ("True", _) => events.push(event(false, "ArchivingHealthy", after.message.clone())),
                (_, r) if r == reasons::ARCHIVE_FAILING => {
                    events.push(event(true, "ArchiveFailing", after.message.clone()));
                }
                _ if after.message.contains("failed") => {
                    events.push(event(true, "StanzaCreationFailed", after.message.clone()));
                }
                _ => {}
            }
        }
    }
    if let Some(reached) = &next.recovery_target_reached
        && previous.and_then(|s| s.recovery_target_reached.as_ref()) != Some(reached)
    {
        events.push(event(
            false,
            "RecoveryTargetReached",
            format!("restore finished: {reached}"),
        ));
    }
    events
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

async fn query_primary(
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

/// Applies this module's children: the ConfigMap (before the instances, which mount it), the
/// repository host and its Service, and the stanza Job. Returns events to publish.
pub async fn apply_children(
    cluster: &Cluster,
    client: &kube::Client,
    manager: &'static str,
    observed: &ObservedBackup,
    desired: &DesiredBackup,
) -> Result<Vec<BackupEvent>, Error> {
    let ns = namespace(cluster);
    let uid = cluster.uid();
    let owned = |meta: &ObjectMeta| {
        meta.owner_references
            .iter()
            .flatten()
            .any(|owner| Some(&owner.uid) == uid.as_ref())
    };
    let mut events = Vec::new();
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    match (&desired.config_map, &observed.config_map) {
        (Some(cm), seen) => {
            apply::ensure(&config_maps, manager, cm.clone(), seen.as_ref()).await?;
        }
        (None, Some(seen)) if owned(&seen.metadata) => {
            delete(
                &config_maps,
                &seen.name_any(),
                "deleting the pgBackRest ConfigMap",
            )
            .await?;
        }
        (None, _) => {}
    }
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    match (&desired.repo_host_service, &observed.repo_host_service) {
        (Some(svc), seen) => {
            apply::ensure(&services, manager, svc.clone(), seen.as_ref()).await?;
        }
        (None, Some(seen)) if owned(&seen.metadata) => {
            delete(
                &services,
                &seen.name_any(),
                "deleting the repository host Service",
            )
            .await?;
        }
        (None, _) => {}
    }
    let statefulsets: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    match (&desired.repo_host, &observed.repo_host) {
        (Some(sts), seen) => {
            apply::ensure(&statefulsets, manager, sts.clone(), seen.as_ref()).await?;
        }
        (None, Some(seen)) if owned(&seen.metadata) => {
            delete(
                &statefulsets,
                &seen.name_any(),
                "deleting the repository host",
            )
            .await?;
            events.push(event(false,
                "RepositoryHostRemoved",
                format!(
                    "no volume repository left: removed the repository host; its volume {REPO_CLAIM}-{}-0 is kept",
                    seen.name_any()
                ),
            ));
        }
        (None, _) => {}
    }
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    match &desired.stanza {
        StanzaAction::Keep => {}
        StanzaAction::Create(job) => {
            apply::ensure(&jobs, manager, job.as_ref().clone(), None).await?;
            events.push(event(
                false,
                "StanzaJobCreated",
                format!("Job {} creates the pgBackRest stanza", job.name_any()),
            ));
        }
        StanzaAction::Delete(reason) => {
            if let Some(job) = &observed.stanza_job
                && owned(&job.metadata)
            {
                delete_with(
                    &jobs,
                    &job.name_any(),
                    "deleting the stanza Job",
                    &DeleteParams {
                        // Its pods go with it.
                        propagation_policy: Some(PropagationPolicy::Background),
                        ..DeleteParams::default()
                    },
                )
                .await?;
                events.push(event(false, "StanzaJobReplaced", reason.clone()));
            }
        }
    }
    Ok(events)
}

async fn delete<K>(api: &Api<K>, name: &str, action: &str) -> Result<(), Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    delete_with(api, name, action, &DeleteParams::default()).await
}

async fn delete_with<K>(
    api: &Api<K>,
    name: &str,
    action: &str,
    params: &DeleteParams,
) -> Result<(), Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(source) => Err(Error::Action {
            action: format!("{action} {name}"),
            source: Box::new(source),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(spec: &str) -> Cluster {
        serde_yaml_ng::from_str(&format!(
            "apiVersion: tusk.dev/v1alpha1\nkind: Cluster\nmetadata: {{name: db, namespace: db, uid: u1}}\nspec:\n  postgresVersion: 17\n  storage: {{size: 1Gi}}\n{spec}"
        ))
        .unwrap()
    }

    fn volume() -> Cluster {
        cluster("  backup: {repositories: [{name: repo1, volume: {size: 5Gi}}]}\n")
    }

    fn assert_restricted(pod: &PodSpec) {
        let security = pod.security_context.clone().unwrap();
        assert_eq!(security.run_as_non_root, Some(true));
        assert_eq!(security.seccomp_profile.unwrap().type_, "RuntimeDefault");
        assert_eq!(pod.automount_service_account_token, Some(false));
        for container in &pod.containers {
            let security = container.security_context.clone().unwrap();
            assert_eq!(
                security.allow_privilege_escalation,
                Some(false),
                "{}",
                container.name
            );
            assert_eq!(
                security.read_only_root_filesystem,
                Some(true),
                "{}",
                container.name
            );
            assert_eq!(security.run_as_non_root, Some(true), "{}", container.name);
            assert_eq!(
                security.capabilities.unwrap().drop,
                Some(vec!["ALL".to_owned()]),
                "{}",
                container.name
            );
        }
    }

    #[test]
    fn repository_host_and_stanza_job_run_restricted() {
        let c = volume();
        let (sts, _) = desired_repo_host(&c, &Images::default(), None).unwrap();
        assert_restricted(&sts.spec.unwrap().template.spec.unwrap());
        let job = desired_stanza_job(&c, &Images::default(), "db-1").unwrap();
        let pod = job.spec.unwrap().template.spec.unwrap();
        assert_restricted(&pod);
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
    }

    #[test]
    fn repository_host_keeps_its_claim_template_as_created() {
        let c = volume();
        let (created, _) = desired_repo_host(&c, &Images::default(), None).unwrap();
        let mut grown = c.clone();
        grown.spec.backup.as_mut().unwrap().repositories[0]
            .volume
            .as_mut()
            .unwrap()
            .size = k8s_openapi::apimachinery::pkg::api::resource::Quantity("9Gi".into());
        let (again, _) = desired_repo_host(&grown, &Images::default(), Some(&created)).unwrap();
        assert_eq!(
            again.spec.unwrap().volume_claim_templates,
            created.spec.unwrap().volume_claim_templates,
            "claim templates of a StatefulSet cannot change"
        );
        assert!(desired_repo_host(&cluster(""), &Images::default(), None).is_none());
    }

    #[test]
    fn archiving_condition_table() {
        let c = volume();
        let status =
            |condition: Option<DesiredCondition>| condition.map(|c| (c.status.as_str(), c.reason));
        assert_eq!(
            archiving_condition(&cluster(""), &StanzaState::Succeeded, None, None),
            None
        );
        for stanza in [
            StanzaState::Waiting("x".into()),
            StanzaState::Running,
            StanzaState::Failed("boom".into()),
        ] {
            assert_eq!(
                status(archiving_condition(&c, &stanza, None, None)),
                Some(("False", STANZA_MISSING))
            );
        }
        let ok = ArchiverStats {
            archived_count: 3,
            last_archived_micros: Some(10),
            ..ArchiverStats::default()
        };
        let failing = ArchiverStats {
            failed_count: 1,
            last_failed_wal: Some("000000010000000000000004".into()),
            last_failed_micros: Some(20),
            ..ok.clone()
        };
        assert_eq!(
            status(archiving_condition(
                &c,
                &StanzaState::Succeeded,
                Some(&ok),
                None
            )),
            Some(("True", reasons::ARCHIVING))
        );
        let condition =
            archiving_condition(&c, &StanzaState::Succeeded, Some(&failing), None).unwrap();
        assert_eq!(
            (condition.status.as_str(), condition.reason),
            ("False", reasons::ARCHIVE_FAILING)
        );
        assert!(condition.message.contains("000000010000000000000004"));
        // Unobserved: the last verdict stands.
        let previous = Condition {
            type_: types::CONTINUOUS_ARCHIVING.into(),
            status: "False".into(),
            reason: reasons::ARCHIVE_FAILING.into(),
            message: "m".into(),
            last_transition_time: Time(jiff::Timestamp::UNIX_EPOCH),
            observed_generation: None,
        };
        assert_eq!(
            status(archiving_condition(
                &c,
                &StanzaState::Succeeded,
                None,
                Some(&previous)
            )),
            Some(("False", reasons::ARCHIVE_FAILING))
        );
        assert_eq!(
            status(archiving_condition(&c, &StanzaState::Succeeded, None, None)),
            Some(("True", reasons::ARCHIVING))
        );
    }

    #[test]
    fn archiver_failing_means_the_latest_attempt_failed() {
        let at = |archived: Option<i64>, failed: Option<i64>| ArchiverStats {
            last_archived_micros: archived,
            last_failed_micros: failed,
            ..ArchiverStats::default()
        };
        assert!(!at(None, None).failing());
        assert!(!at(Some(5), None).failing());
        assert!(at(None, Some(5)).failing());
        assert!(at(Some(5), Some(6)).failing());
        assert!(!at(Some(7), Some(6)).failing(), "recovered");
    }

    #[test]
    fn a_changed_repository_hash_replaces_the_stanza_job() {
        let c = volume();
        let mut job = desired_stanza_job(&c, &Images::default(), "db-1").unwrap();
        let observed = ObservedBackup {
            stanza_job: Some(job.clone()),
            ..ObservedBackup::default()
        };
        let now = Time(jiff::Timestamp::now());
        let (state, action) = plan_stanza(&c, &Images::default(), &observed, Some("db-1"), &now);
        assert_eq!((state, action), (StanzaState::Running, StanzaAction::Keep));
        job.metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(REPOSITORIES_HASH_ANNOTATION.into(), "old".into());
        let observed = ObservedBackup {
            stanza_job: Some(job),
            ..ObservedBackup::default()
        };
        let (_, action) = plan_stanza(&c, &Images::default(), &observed, Some("db-1"), &now);
        assert!(matches!(action, StanzaAction::Delete(_)));
    }

    /// Runs the stanza script with a stand-in `pgbackrest` that logs its arguments, fails
    /// `stanza-create` when `CREATE_FAILS` is set and prints an info document recording
    /// `STORED` as the stanza's database version.
    fn run_stanza_script(cluster_major: i32, create_fails: bool, stored: &str) -> (bool, String) {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("calls");
        let fake = dir.path().join("pgbackrest");
        std::fs::write(
            &fake,
            format!(
                r#"#!/bin/sh
echo "$*" >> {log}
case "$*" in
  *stanza-create) [ -z "$CREATE_FAILS" ] ;;
  *info) printf '[{{"archive":[{{"id":"%s-1"}}],"db":[{{"id":1,"system-id":1,"version":"14"}},{{"id":2,"system-id":2,"version":"%s"}}],"name":"db"}}]' "$STORED" "$STORED" ;;
  *) true ;;
esac
"#,
                log = log.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = format!(
            "{}:{}",
            dir.path().display(),
            std::env::var("PATH").unwrap()
        );
        let mut command = std::process::Command::new("/bin/sh");
        command
            .args(["-c", &stanza_script(cluster_major)])
            .env("PATH", path)
            .env("STORED", stored);
        if create_fails {
            command.env("CREATE_FAILS", "1");
        } else {
            command.env_remove("CREATE_FAILS");
        }
        let status = command.status().unwrap();
        (
            status.success(),
            std::fs::read_to_string(&log).unwrap_or_default(),
        )
    }

    #[test]
    fn stanza_script_creates_then_checks() {
        let (ok, calls) = run_stanza_script(17, false, "17");
        assert!(ok);
        assert_eq!(calls, "--stanza=db stanza-create\n--stanza=db check\n");
    }

    #[test]
    fn stanza_script_upgrades_only_a_stanza_of_an_older_major() {
        let (ok, calls) = run_stanza_script(17, true, "16");
        assert!(ok, "{calls}");
        assert!(calls.contains("stanza-upgrade"), "{calls}");
        assert!(calls.ends_with("--stanza=db check\n"), "{calls}");

        // Same major (another database on this repository path?): refuse, never upgrade.
        let (ok, calls) = run_stanza_script(17, true, "17");
        assert!(!ok);
        assert!(!calls.contains("stanza-upgrade"), "{calls}");
        assert!(!calls.contains("check"), "{calls}");

        // A newer stanza than the Cluster: refuse as well.
        let (ok, calls) = run_stanza_script(16, true, "17");
        assert!(!ok);
        assert!(!calls.contains("stanza-upgrade"), "{calls}");
    }

    #[test]
    fn a_new_major_reruns_the_stanza_job() {
        let mut c = volume();
        let before = repositories_hash(&c).unwrap();
        c.spec.postgres_version += 1;
        assert_ne!(repositories_hash(&c).unwrap(), before);
    }
}

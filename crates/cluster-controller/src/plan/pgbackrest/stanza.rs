//! The stanza Job `<cluster>-stanza`: when to create, keep or re-create it, and what it runs.

use super::repo_host::{repo_host_ready, repo_host_selector};
use super::settings::{
    COMPONENT, CONFIG_VOLUME, REPO_CLAIM, REPOSITORIES_HASH_ANNOTATION, STANZA_CONFIG_KEY,
    TLS_VOLUME, config_volume, repositories_hash, stanza_settings, tls_volume,
};
use crate::observe::backup::ObservedBackup;
use crate::shared::layout::stanza_job_name;
use crate::shared::meta::{child_meta, cluster_name, namespace};
use crate::shared::pod::postgres_pod_security;
use crate::shared::pod::{Images, empty_dir, mount, pull_policy, restricted_container_security};
use k8s_openapi::api::batch::v1::{Job, JobCondition, JobSpec};
use k8s_openapi::api::core::v1::{
    Affinity, Container, EnvVar, PersistentVolumeClaimVolumeSource, PodAffinity, PodAffinityTerm,
    PodSpec, PodTemplateSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};
use kube::ResourceExt;
use std::collections::BTreeMap;
use std::time::Duration;
use tusk_api::names::{self};
use tusk_api::{Cluster, labels};
use tusk_pgbackrest::Settings;

/// How long after a failed stanza Job it is tried again.
pub const STANZA_RETRY_AFTER: Duration = Duration::from_secs(300);

/// Condition reason while the stanza is not (yet) created.
pub const STANZA_MISSING: &str = "StanzaMissing";

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
                spec: Some(stanza_pod_spec(cluster, images, primary, &settings)),
            },
            ..JobSpec::default()
        }),
        ..Job::default()
    })
}

/// Whether a repository lives on a volume, that is on the repository host.
fn has_volume_repository(cluster: &Cluster) -> bool {
    cluster
        .spec
        .backup
        .iter()
        .flat_map(|b| b.repositories.iter())
        .any(|r| r.volume.is_some())
}

fn stanza_pod_spec(
    cluster: &Cluster,
    images: &Images,
    primary: &str,
    settings: &Settings,
) -> PodSpec {
    let spec = &cluster.spec;
    let volume_repository = has_volume_repository(cluster);
    PodSpec {
        restart_policy: Some("Never".to_owned()),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        security_context: Some(postgres_pod_security()),
        affinity: volume_repository.then(|| repo_host_affinity(cluster)),
        containers: vec![stanza_container(
            cluster,
            images,
            primary,
            settings,
            volume_repository,
        )],
        volumes: Some(stanza_volumes(cluster, settings, volume_repository)),
        node_selector: (!spec.scheduling.node_selector.is_empty())
            .then(|| spec.scheduling.node_selector.clone()),
        tolerations: (!spec.scheduling.tolerations.is_empty())
            .then(|| spec.scheduling.tolerations.clone()),
        image_pull_secrets: (!spec.image_pull_secrets.is_empty())
            .then(|| spec.image_pull_secrets.clone()),
        ..PodSpec::default()
    }
}

/// The container running [`stanza_script`], with the primary's pgBackRest server as `pg1-host`.
fn stanza_container(
    cluster: &Cluster,
    images: &Images,
    primary: &str,
    settings: &Settings,
    volume_repository: bool,
) -> Container {
    let spec = &cluster.spec;
    let name = cluster_name(cluster);
    let mut env = vec![EnvVar {
        name: tusk_pgbackrest::env_var_name("pg1-host"),
        value: Some(tusk_pgbackrest::instance_address(
            &name,
            primary,
            &namespace(cluster),
        )),
        ..EnvVar::default()
    }];
    env.extend(settings.env());
    let script = stanza_script(spec.postgres_version);
    Container {
        name: "pgbackrest".to_owned(),
        image: Some(images.postgres_image(cluster)),
        image_pull_policy: spec.image_pull_policy.map(pull_policy),
        command: Some(vec!["/bin/sh".to_owned(), "-c".to_owned(), script]),
        env: Some(env),
        resources: spec.backup.as_ref().and_then(|b| b.job_resources.clone()),
        security_context: Some(restricted_container_security()),
        volume_mounts: Some(stanza_mounts(settings, volume_repository)),
        ..Container::default()
    }
}

/// A volume repository is mounted directly, from the repository host's claim.
fn stanza_mounts(settings: &Settings, volume_repository: bool) -> Vec<VolumeMount> {
    let mut mounts = vec![
        mount(CONFIG_VOLUME, tusk_pgbackrest::CONFIG_DIR, true),
        mount(TLS_VOLUME, tusk_pgbackrest::TLS_DIR, true),
        mount("tmp", tusk_pgbackrest::TMP_DIR, false),
    ];
    mounts.extend(settings.volume_mounts());
    if volume_repository {
        mounts.push(mount(REPO_CLAIM, tusk_pgbackrest::REPO_HOST_PATH, false));
    }
    mounts
}

fn stanza_volumes(cluster: &Cluster, settings: &Settings, volume_repository: bool) -> Vec<Volume> {
    let name = cluster_name(cluster);
    let mut volumes = vec![
        config_volume(cluster, CONFIG_VOLUME, STANZA_CONFIG_KEY, false),
        tls_volume(names::pgbackrest_secret(&name), false),
        empty_dir("tmp", None),
    ];
    volumes.extend(settings.volumes());
    if volume_repository {
        volumes.push(Volume {
            name: REPO_CLAIM.to_owned(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: names::statefulset_claim(REPO_CLAIM, &names::repo_host(&name)),
                read_only: None,
            }),
            ..Volume::default()
        });
    }
    volumes
}

/// The repository host's volume is ReadWriteOnce: run on the repository host's node.
fn repo_host_affinity(cluster: &Cluster) -> Affinity {
    Affinity {
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
    }
}

/// A Job's finished condition (`Complete` or `Failed`) that is true, with its time.
pub(crate) fn job_finished<'a>(job: &'a Job, type_: &str) -> Option<&'a JobCondition> {
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
    let Some(wanted_hash) = repositories_hash(cluster) else {
        let action = match &observed.stanza_job {
            Some(_) => StanzaAction::Delete("the Cluster has no repository any more".to_owned()),
            None => StanzaAction::Keep,
        };
        return (StanzaState::Waiting("no repository".to_owned()), action);
    };
    match &observed.stanza_job {
        Some(job) => plan_existing_job(job, &wanted_hash, now),
        None => plan_new_job(cluster, images, observed, primary),
    }
}

/// A Job made for other repositories is replaced; a failed one is retried after
/// [`STANZA_RETRY_AFTER`].
fn plan_existing_job(job: &Job, wanted_hash: &str, now: &Time) -> (StanzaState, StanzaAction) {
    let hash = job.annotations().get(REPOSITORIES_HASH_ANNOTATION);
    if hash.map(String::as_str) != Some(wanted_hash) {
        return (
            StanzaState::Waiting("the repositories changed: creating the stanza again".to_owned()),
            StanzaAction::Delete("the repositories changed".to_owned()),
        );
    }
    if job_finished(job, "Complete").is_some() {
        return (StanzaState::Succeeded, StanzaAction::Keep);
    }
    let Some(failed) = job_finished(job, "Failed") else {
        return (StanzaState::Running, StanzaAction::Keep);
    };
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
    (StanzaState::Failed(message), action)
}

/// The Job is created once there is a primary to run it against and, for a volume repository,
/// a ready repository host whose node it runs on.
fn plan_new_job(
    cluster: &Cluster,
    images: &Images,
    observed: &ObservedBackup,
    primary: Option<&str>,
) -> (StanzaState, StanzaAction) {
    let name = cluster_name(cluster);
    let Some(primary) = primary else {
        return (
            StanzaState::Waiting(format!(
                "Job {} creates the stanza once the Cluster is Ready",
                stanza_job_name(&name)
            )),
            StanzaAction::Keep,
        );
    };
    if has_volume_repository(cluster) && !repo_host_ready(observed.repo_host.as_ref()) {
        return (
            StanzaState::Waiting(format!(
                "waiting for the repository host {} to be ready",
                names::repo_host(&name)
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

//! The repository host for volume repositories: StatefulSet and Service `<cluster>-repo-host`,
//! one pod running `pgbackrest server` over the repository PVC.

use super::settings::{
    CONFIG_VOLUME, REPO_CLAIM, REPO_HOST_COMPONENT, REPO_HOST_CONFIG_KEY, TLS_VOLUME,
    config_volume, tls_volume,
};
use crate::shared::meta::{child_meta, cluster_name};
use crate::shared::pod::{
    Images, claim, empty_dir, mount, port, postgres_pod_security, pull_policy,
    restricted_container_security,
};
use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
};
use k8s_openapi::api::core::v1::{
    Container, PersistentVolumeClaim, PodSpec, PodTemplateSpec, Probe, Service, ServicePort,
    ServiceSpec, TCPSocketAction, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;
use tusk_api::cluster::VolumeSpec;
use tusk_api::names::{self, PGBACKREST_PORT};
use tusk_api::{Cluster, labels};
use tusk_pgbackrest::Settings;

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

pub(crate) fn tcp_probe(period: i32) -> Probe {
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
    let host = names::repo_host(&cluster_name(cluster));
    let pod = repo_host_pod_spec(cluster, images, &settings);
    let statefulset =
        repo_host_statefulset(cluster, &host, pod, repository_claims(observed, volume));
    Some((statefulset, repo_host_service(cluster, host)))
}

/// The claim the repository lives on: the observed StatefulSet's template once it exists.
fn repository_claims(
    observed: Option<&StatefulSet>,
    volume: &VolumeSpec,
) -> Vec<PersistentVolumeClaim> {
    observed
        .and_then(|sts| sts.spec.as_ref())
        .and_then(|s| s.volume_claim_templates.clone())
        .unwrap_or_else(|| {
            vec![claim(
                REPO_CLAIM,
                &volume.size,
                volume.storage_class_name.as_deref(),
            )]
        })
}

fn repo_host_pod_spec(cluster: &Cluster, images: &Images, settings: &Settings) -> PodSpec {
    let spec = &cluster.spec;
    PodSpec {
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        security_context: Some(postgres_pod_security()),
        containers: vec![repo_host_container(cluster, images, settings)],
        volumes: Some(repo_host_volumes(cluster, settings)),
        node_selector: (!spec.scheduling.node_selector.is_empty())
            .then(|| spec.scheduling.node_selector.clone()),
        tolerations: (!spec.scheduling.tolerations.is_empty())
            .then(|| spec.scheduling.tolerations.clone()),
        image_pull_secrets: (!spec.image_pull_secrets.is_empty())
            .then(|| spec.image_pull_secrets.clone()),
        termination_grace_period_seconds: Some(30),
        ..PodSpec::default()
    }
}

/// The `pgbackrest server` container, with the repository claim mounted read-write.
fn repo_host_container(cluster: &Cluster, images: &Images, settings: &Settings) -> Container {
    let spec = &cluster.spec;
    let mut mounts = vec![
        mount(CONFIG_VOLUME, tusk_pgbackrest::CONFIG_DIR, true),
        mount(TLS_VOLUME, tusk_pgbackrest::TLS_DIR, true),
        mount(REPO_CLAIM, tusk_pgbackrest::REPO_HOST_PATH, false),
        mount("tmp", tusk_pgbackrest::TMP_DIR, false),
    ];
    mounts.extend(settings.volume_mounts());
    let env = settings.env();
    Container {
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
    }
}

/// The pod's volumes; the repository claim comes from the StatefulSet's claim template.
fn repo_host_volumes(cluster: &Cluster, settings: &Settings) -> Vec<Volume> {
    let mut volumes = vec![
        config_volume(cluster, CONFIG_VOLUME, REPO_HOST_CONFIG_KEY, false),
        tls_volume(names::pgbackrest_secret(&cluster_name(cluster)), false),
        empty_dir("tmp", None),
    ];
    volumes.extend(settings.volumes());
    volumes
}

/// One replica whose claim is retained when the StatefulSet is deleted or scaled: the
/// repository outlives the repository host.
fn repo_host_statefulset(
    cluster: &Cluster,
    host: &str,
    pod: PodSpec,
    claims: Vec<PersistentVolumeClaim>,
) -> StatefulSet {
    let mut pod_labels = labels::cluster_child_labels(&cluster_name(cluster), REPO_HOST_COMPONENT);
    pod_labels.extend(repo_host_selector(cluster));
    StatefulSet {
        metadata: child_meta(cluster, host.to_owned(), REPO_HOST_COMPONENT),
        spec: Some(StatefulSetSpec {
            replicas: Some(1),
            service_name: Some(host.to_owned()),
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
                spec: Some(pod),
            },
            volume_claim_templates: Some(claims),
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    }
}

/// The Service the instances reach the repository host through.
fn repo_host_service(cluster: &Cluster, host: String) -> Service {
    Service {
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
    }
}

pub(crate) fn repo_host_ready(observed: Option<&StatefulSet>) -> bool {
    observed
        .and_then(|sts| sts.status.as_ref())
        .and_then(|status| status.ready_replicas)
        .is_some_and(|ready| ready >= 1)
}

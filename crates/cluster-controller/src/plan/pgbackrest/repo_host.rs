//! The repository host for volume repositories: StatefulSet and Service `<cluster>-repo-host`,
//! one pod running `pgbackrest server` over the repository PVC.

use super::settings::*;
use crate::shared::layout::POSTGRES_UID;
use crate::shared::meta::{child_meta, cluster_name};
use crate::shared::pod::{
    Images, claim, empty_dir, mount, port, pull_policy, restricted_container_security,
};
use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
};
use k8s_openapi::api::core::v1::{
    Container, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, SeccompProfile, Service,
    ServicePort, ServiceSpec, TCPSocketAction,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;
use tusk_api::names::{self, PGBACKREST_PORT};
use tusk_api::{Cluster, labels};

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

pub(crate) fn pod_security() -> PodSecurityContext {
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

pub(crate) fn repo_host_ready(observed: Option<&StatefulSet>) -> bool {
    observed
        .and_then(|sts| sts.status.as_ref())
        .and_then(|status| status.ready_replicas)
        .is_some_and(|ready| ready >= 1)
}

//! The StatefulSet of one instance and its pod: the `postgres` container (Patroni), the
//! `pgbackrest` sidecar (built in [`crate::plan::pgbackrest::sidecar`]), the `exporter`
//! (built in [`crate::plan::monitoring`]), volumes, claim templates and scheduling.

use crate::plan::children::{cluster_pod_selector, instance_pod_selector};
use crate::plan::pgbackrest::InstancePod;
use crate::shared::layout::{self, PATRONI_CONFIG_KEY, RESTART_HASH_ANNOTATION, component};
use crate::shared::meta::patroni_account_name;
use crate::shared::meta::{child_meta_with_labels, cluster_name};
use crate::shared::pod::{
    Images, SecretEnv, claim, empty_dir, env_from_field, env_from_secret, env_var, http_probe,
    mount, port, postgres_pod_security, pull_policy, restricted_container_security,
};
use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
    StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::EnvVar;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::api::core::v1::{
    Affinity, ConfigMapVolumeSource, Container, KeyToPath, PodAffinityTerm, PodAntiAffinity,
    PodSpec, PodTemplateSpec, ProjectedVolumeSource, SecretProjection, SecretVolumeSource,
    TopologySpreadConstraint, Volume, VolumeProjection, WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use std::collections::BTreeMap;
use tusk_api::Cluster;
use tusk_api::cluster::AntiAffinityType;
use tusk_api::labels;
use tusk_api::names::{self, PATRONI_PORT, POSTGRES_PORT};

/// What differs between instances and what the rollout planner decides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstancePlan {
    /// Instance name, `<cluster>-<n>`.
    pub name: String,
    /// Whether the instance should run (false while shut down or being removed).
    pub running: bool,
}

/// The StatefulSet of one instance.
pub fn desired_statefulset(
    cluster: &Cluster,
    instance: &InstancePlan,
    images: &Images,
    secret_env: &SecretEnv,
    restart_hash: &str,
) -> StatefulSet {
    let cluster_name = cluster_name(cluster);
    StatefulSet {
        metadata: child_meta_with_labels(
            cluster,
            instance.name.clone(),
            component::DATABASE,
            BTreeMap::from([(labels::INSTANCE_NAME.to_owned(), instance.name.clone())]),
        ),
        spec: Some(StatefulSetSpec {
            replicas: Some(i32::from(instance.running)),
            service_name: Some(names::headless_service(&cluster_name)),
            selector: LabelSelector {
                match_labels: Some(instance_pod_selector(cluster, &instance.name)),
                ..LabelSelector::default()
            },
            // tusk decides when each pod restarts: replicas first, then a switchover.
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("OnDelete".to_owned()),
                ..StatefulSetUpdateStrategy::default()
            }),
            pod_management_policy: Some("Parallel".to_owned()),
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some("Retain".to_owned()),
                    when_scaled: Some("Retain".to_owned()),
                },
            ),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels(cluster, &instance.name)),
                    annotations: Some(pod_annotations(cluster, restart_hash)),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod_spec(cluster, images, secret_env)),
            },
            volume_claim_templates: Some(claim_templates(cluster)),
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    }
}

/// Adds an instance's `tusk.dev/restart-instance` request to its pod template: a new value
/// makes the pod outdated, so the rolling update recreates it (after a switchover if it is
/// the primary). Kept out of the restart hash, which is the same for every instance.
pub fn add_restart_request(sts: &mut StatefulSet, request: &str) {
    if let Some(spec) = sts.spec.as_mut() {
        spec.template
            .metadata
            .get_or_insert_with(ObjectMeta::default)
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(
                labels::RESTART_INSTANCE_ANNOTATION.to_owned(),
                request.to_owned(),
            );
    }
}

/// The instance pod's labels: the Cluster's child labels, the instance, what Patroni's
/// Kubernetes DCS finds its members by, then the user's `instanceMetadata` (never overriding).
fn pod_labels(cluster: &Cluster, instance: &str) -> BTreeMap<String, String> {
    let cluster_name = cluster_name(cluster);
    let mut labels = labels::cluster_child_labels(&cluster_name, component::DATABASE);
    labels.insert(labels::INSTANCE_NAME.to_owned(), instance.to_owned());
    labels.extend(layout::dcs_labels(&cluster_name));
    if let Some(extra) = &cluster.spec.instance_metadata {
        for (key, value) in &extra.labels {
            labels.entry(key.clone()).or_insert_with(|| value.clone());
        }
    }
    labels
}

/// The user's `instanceMetadata` annotations plus the restart hash, and the Cluster's restart
/// request (`tusk.dev/restart`): a new value changes the template, so the restart hash, so
/// every instance is restarted in the rolling update's order. Removing the annotation keeps
/// the last finished value, so it restarts nothing.
fn pod_annotations(cluster: &Cluster, restart_hash: &str) -> BTreeMap<String, String> {
    let mut annotations = cluster
        .spec
        .instance_metadata
        .as_ref()
        .map(|m| m.annotations.clone())
        .unwrap_or_default();
    annotations.insert(RESTART_HASH_ANNOTATION.to_owned(), restart_hash.to_owned());
    if let Some(request) = cluster.restart_template_value() {
        annotations.insert(labels::RESTART_ANNOTATION.to_owned(), request);
    }
    annotations
}

/// The pod: `postgres` (Patroni), the `pgbackrest` sidecar with a repository, the `exporter`
/// with monitoring; restricted security, scheduling from `spec.scheduling`.
fn pod_spec(cluster: &Cluster, images: &Images, secret_env: &SecretEnv) -> PodSpec {
    let spec = &cluster.spec;
    // archive-push and archive-get run in the postgres container: pgBackRest's configuration,
    // certificates and secret options (crate::plan::pgbackrest).
    let pgbackrest = crate::plan::pgbackrest::instance_pod(cluster);
    let mut containers = vec![postgres_container(
        cluster,
        images,
        secret_env,
        pgbackrest.as_ref(),
    )];
    if let Some(pgbackrest) = &pgbackrest {
        containers.push(crate::plan::pgbackrest::sidecar_container(
            cluster, images, pgbackrest,
        ));
    }
    if spec.monitoring.enabled {
        containers.push(crate::plan::monitoring::exporter_container(cluster, images));
    }
    PodSpec {
        service_account_name: Some(patroni_account_name(cluster)),
        automount_service_account_token: Some(true),
        security_context: Some(postgres_pod_security()),
        containers,
        volumes: Some(volumes(cluster, pgbackrest.as_ref())),
        affinity: affinity(cluster),
        topology_spread_constraints: topology_spread(cluster),
        node_selector: (!spec.scheduling.node_selector.is_empty())
            .then(|| spec.scheduling.node_selector.clone()),
        tolerations: (!spec.scheduling.tolerations.is_empty())
            .then(|| spec.scheduling.tolerations.clone()),
        priority_class_name: spec.priority_class_name.clone(),
        image_pull_secrets: (!spec.image_pull_secrets.is_empty())
            .then(|| spec.image_pull_secrets.clone()),
        // Patroni demotes cleanly on SIGTERM; give PostgreSQL time to checkpoint.
        termination_grace_period_seconds: Some(60),
        enable_service_links: Some(false),
        ..PodSpec::default()
    }
}

/// The `postgres` container: Patroni running PostgreSQL, with the environment
/// `layout::INSTANCE_ENV` documents.
fn postgres_container(
    cluster: &Cluster,
    images: &Images,
    secret_env: &SecretEnv,
    pgbackrest: Option<&InstancePod>,
) -> Container {
    let spec = &cluster.spec;
    let mut env = postgres_env(cluster, secret_env);
    let mut mounts = vec![
        mount("data", "/pgdata", false),
        mount("patroni-config", "/etc/patroni", true),
        mount("server-tls", "/etc/tusk/tls", true),
        mount("run", "/var/run/postgresql", false),
        mount("tmp", "/tmp", false),
    ];
    if spec.wal_storage.is_some() {
        mounts.push(mount("wal", "/pgwal", false));
    }
    if let Some(pgbackrest) = pgbackrest {
        env.extend(pgbackrest.env.iter().cloned());
        mounts.extend(pgbackrest.mounts.iter().cloned());
    }
    Container {
        name: names::INSTANCE_CONTAINER.to_owned(),
        image: Some(images.postgres_image(cluster)),
        image_pull_policy: spec.image_pull_policy.map(pull_policy),
        command: Some(vec![
            "patroni".to_owned(),
            format!("/etc/patroni/{PATRONI_CONFIG_KEY}"),
        ]),
        env: Some(env),
        ports: Some(vec![
            port("postgresql", POSTGRES_PORT),
            port("patroni", PATRONI_PORT),
        ]),
        readiness_probe: Some(http_probe("/readiness", 5, 3)),
        liveness_probe: Some(http_probe("/liveness", 10, 6)),
        resources: spec.resources.clone(),
        security_context: Some(restricted_container_security()),
        volume_mounts: Some(mounts),
        // When Patroni gives up (a failed bootstrap), the end of its output — PostgreSQL's
        // log included — becomes the termination message the Cluster's status quotes.
        termination_message_policy: Some("FallbackToLogsOnError".to_owned()),
        ..Container::default()
    }
}

/// Patroni's member name and addresses from the downward API, `PGDATA`, and the passwords
/// from the credential Secrets.
fn postgres_env(cluster: &Cluster, secret_env: &SecretEnv) -> Vec<EnvVar> {
    let mut env = vec![
        env_from_field("POD_IP", "status.podIP"),
        env_from_field("PATRONI_NAME", "metadata.name"),
        env_from_field("PATRONI_KUBERNETES_POD_IP", "status.podIP"),
        env_from_field("PATRONI_KUBERNETES_NAMESPACE", "metadata.namespace"),
        env_var(
            "PATRONI_POSTGRESQL_CONNECT_ADDRESS",
            format!("$(POD_IP):{POSTGRES_PORT}"),
        ),
        env_var(
            "PATRONI_RESTAPI_CONNECT_ADDRESS",
            format!("$(POD_IP):{PATRONI_PORT}"),
        ),
        env_var(
            "PGDATA",
            format!("/pgdata/pg{}", cluster.spec.postgres_version),
        ),
    ];
    env.extend(
        secret_env
            .vars
            .iter()
            .map(|(var, secret, key)| env_from_secret(var, secret.clone(), key)),
    );
    env
}

/// The pod's volumes: Patroni's ConfigMap, the server certificate, the socket and scratch
/// emptyDirs, and what monitoring and pgBackRest add.
fn volumes(cluster: &Cluster, pgbackrest: Option<&InstancePod>) -> Vec<Volume> {
    let cluster_name = cluster_name(cluster);
    let mut volumes = vec![
        Volume {
            name: "patroni-config".to_owned(),
            config_map: Some(ConfigMapVolumeSource {
                name: names::patroni_config(&cluster_name),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        server_tls_volume(cluster),
        empty_dir("run", Some("Memory")),
        empty_dir("tmp", None),
    ];
    if cluster.spec.monitoring.enabled {
        volumes.push(crate::plan::monitoring::volume(cluster));
    }
    if cluster.spec.has_repository() {
        volumes.push(Volume {
            name: "pgbackrest-tls".to_owned(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(names::pgbackrest_secret(&cluster_name)),
                default_mode: Some(0o440),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
    }
    if let Some(pgbackrest) = pgbackrest {
        volumes.extend(pgbackrest.volumes.iter().cloned());
    }
    volumes
}

/// The data claim, and the WAL claim with `spec.walStorage`.
fn claim_templates(cluster: &Cluster) -> Vec<PersistentVolumeClaim> {
    let spec = &cluster.spec;
    let mut claims = vec![claim(
        "data",
        &spec.storage.size,
        spec.storage.storage_class_name.as_deref(),
    )];
    if let Some(wal) = &spec.wal_storage {
        claims.push(claim("wal", &wal.size, wal.storage_class_name.as_deref()));
    }
    claims
}

/// `/etc/tusk/tls/{tls.crt,tls.key,ca.crt}`, projected from the generated server Secret or
/// from the user's `serverSecret` and `caSecret`. PostgreSQL accepts a key readable by its
/// group when root owns the file, which is how projected files are owned.
fn server_tls_volume(cluster: &Cluster) -> Volume {
    let sources = crate::plan::tls::server_tls_sources(cluster);
    let item = |(secret, key): (String, &'static str)| VolumeProjection {
        secret: Some(SecretProjection {
            name: secret,
            items: Some(vec![KeyToPath {
                key: key.to_owned(),
                path: key.to_owned(),
                mode: None,
            }]),
            optional: Some(false),
        }),
        ..VolumeProjection::default()
    };
    Volume {
        name: "server-tls".to_owned(),
        projected: Some(ProjectedVolumeSource {
            default_mode: Some(0o440),
            sources: Some(vec![
                item(sources.certificate),
                item(sources.private_key),
                item(sources.ca),
            ]),
        }),
        ..Volume::default()
    }
}

/// Anti-affinity between this Cluster's instances (Preferred by default), merged with the
/// user's own affinity rules.
fn affinity(cluster: &Cluster) -> Option<Affinity> {
    let scheduling = &cluster.spec.scheduling;
    let mut affinity = scheduling.affinity.clone().unwrap_or_default();
    let term = PodAffinityTerm {
        label_selector: Some(LabelSelector {
            match_labels: Some(cluster_pod_selector(cluster)),
            ..LabelSelector::default()
        }),
        topology_key: scheduling.pod_anti_affinity.topology_key.clone(),
        ..PodAffinityTerm::default()
    };
    let anti = affinity
        .pod_anti_affinity
        .get_or_insert_with(PodAntiAffinity::default);
    match scheduling.pod_anti_affinity.type_ {
        AntiAffinityType::Disabled => {}
        AntiAffinityType::Preferred => anti
            .preferred_during_scheduling_ignored_during_execution
            .get_or_insert_with(Vec::new)
            .push(WeightedPodAffinityTerm {
                weight: 100,
                pod_affinity_term: term,
            }),
        AntiAffinityType::Required => anti
            .required_during_scheduling_ignored_during_execution
            .get_or_insert_with(Vec::new)
            .push(term),
    }
    if affinity.pod_anti_affinity.as_ref().is_some_and(|a| {
        a.preferred_during_scheduling_ignored_during_execution
            .is_none()
            && a.required_during_scheduling_ignored_during_execution
                .is_none()
    }) {
        affinity.pod_anti_affinity = None;
    }
    let empty = affinity.node_affinity.is_none()
        && affinity.pod_affinity.is_none()
        && affinity.pod_anti_affinity.is_none();
    (!empty).then_some(affinity)
}

fn topology_spread(cluster: &Cluster) -> Option<Vec<TopologySpreadConstraint>> {
    let scheduling = &cluster.spec.scheduling;
    let selector = LabelSelector {
        match_labels: Some(cluster_pod_selector(cluster)),
        ..LabelSelector::default()
    };
    let mut constraints: Vec<TopologySpreadConstraint> = scheduling
        .topology_spread_constraints
        .iter()
        .cloned()
        .map(|mut c| {
            if c.label_selector.is_none() {
                c.label_selector = Some(selector.clone());
            }
            c
        })
        .collect();
    if scheduling.spread_across_zones {
        constraints.push(TopologySpreadConstraint {
            max_skew: 1,
            topology_key: "topology.kubernetes.io/zone".to_owned(),
            when_unsatisfiable: "ScheduleAnyway".to_owned(),
            label_selector: Some(selector),
            ..TopologySpreadConstraint::default()
        });
    }
    (!constraints.is_empty()).then_some(constraints)
}

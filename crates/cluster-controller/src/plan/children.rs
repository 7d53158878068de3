//! Desired children of a Cluster other than Secrets: pure builders, one per kind.
//!
//! Every builder takes the Cluster (and what it needs besides) and returns a typed k8s-openapi
//! object ready for server-side apply. Nothing here reads the API.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
    StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    Affinity, ConfigMap, ConfigMapVolumeSource, Container, KeyToPath, PodAffinityTerm,
    PodAntiAffinity, PodSecurityContext, PodSpec, PodTemplateSpec, ProjectedVolumeSource,
    SeccompProfile, SecretProjection, SecretVolumeSource, Service, ServiceAccount, ServicePort,
    ServiceSpec, TopologySpreadConstraint, Volume, VolumeProjection, WeightedPodAffinityTerm,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tusk_api::Cluster;
use tusk_api::cluster::AntiAffinityType;
use tusk_api::labels;
use tusk_api::names::{self, EXPORTER_PORT, PATRONI_PORT, PGBACKREST_PORT, POSTGRES_PORT};

use crate::shared::layout::{
    self, PATRONI_CONFIG_KEY, POSTGRES_UID, RESTART_HASH_ANNOTATION, component,
};
use crate::shared::meta::patroni_account_name;
use crate::shared::meta::{child_meta, child_meta_with_labels, cluster_name, namespace};
use crate::shared::pod::{
    Images, SecretEnv, claim, empty_dir, env_from_field, env_from_secret, env_var, http_probe,
    mount, port, pull_policy, restricted_container_security,
};

/// Labels that select the pods of `cluster` (all instances).
pub fn cluster_pod_selector(cluster: &Cluster) -> BTreeMap<String, String> {
    BTreeMap::from([
        (labels::CLUSTER.to_owned(), cluster_name(cluster)),
        (labels::COMPONENT.to_owned(), component::DATABASE.to_owned()),
    ])
}

/// Labels that select the pod of one instance.
pub fn instance_pod_selector(cluster: &Cluster, instance: &str) -> BTreeMap<String, String> {
    let mut selector = cluster_pod_selector(cluster);
    selector.insert(labels::INSTANCE_NAME.to_owned(), instance.to_owned());
    selector
}

pub fn desired_service_account(cluster: &Cluster) -> ServiceAccount {
    ServiceAccount {
        metadata: child_meta(cluster, patroni_account_name(cluster), component::PATRONI),
        ..ServiceAccount::default()
    }
}

/// Exactly what Patroni's Kubernetes DCS needs (DESIGN.md §7): its pods (to publish member
/// state and its role label), its Endpoints (leader lock, config, sync, failover), and
/// creating the `-config` Service.
pub fn desired_role(cluster: &Cluster) -> Role {
    let rule = |resources: &[&str], verbs: &[&str]| PolicyRule {
        api_groups: Some(vec![String::new()]),
        resources: Some(resources.iter().map(|r| (*r).to_owned()).collect()),
        verbs: verbs.iter().map(|v| (*v).to_owned()).collect(),
        ..PolicyRule::default()
    };
    Role {
        metadata: child_meta(cluster, patroni_account_name(cluster), component::PATRONI),
        rules: Some(vec![
            rule(&["pods"], &["get", "list", "watch", "patch", "update"]),
            rule(
                &["endpoints"],
                &[
                    "get", "list", "watch", "create", "patch", "update", "delete",
                ],
            ),
            rule(&["services"], &["create"]),
        ]),
    }
}

pub fn desired_role_binding(cluster: &Cluster) -> RoleBinding {
    let name = patroni_account_name(cluster);
    RoleBinding {
        metadata: child_meta(cluster, name.clone(), component::PATRONI),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".to_owned(),
            kind: "Role".to_owned(),
            name: name.clone(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".to_owned(),
            name,
            namespace: Some(namespace(cluster)),
            ..Subject::default()
        }]),
    }
}

/// The ConfigMap holding `patroni.yaml`.
pub fn desired_config_map(cluster: &Cluster, patroni_yaml: String) -> ConfigMap {
    ConfigMap {
        metadata: child_meta(
            cluster,
            names::patroni_config(&cluster_name(cluster)),
            component::PATRONI,
        ),
        data: Some(BTreeMap::from([(
            PATRONI_CONFIG_KEY.to_owned(),
            patroni_yaml,
        )])),
        ..ConfigMap::default()
    }
}

fn postgres_port() -> ServicePort {
    ServicePort {
        name: Some("postgresql".to_owned()),
        port: i32::from(POSTGRES_PORT),
        target_port: Some(IntOrString::Int(i32::from(POSTGRES_PORT))),
        protocol: Some("TCP".to_owned()),
        ..ServicePort::default()
    }
}

/// The four Services: `-rw` (no selector: Patroni writes its Endpoints, the leader lock),
/// `-ro` (replicas), `-r` (any instance) and the headless `-pods`.
pub fn desired_services(cluster: &Cluster) -> Vec<Service> {
    let name = cluster_name(cluster);
    let service = |service_name: String,
                   selector: Option<BTreeMap<String, String>>,
                   headless: bool| Service {
        metadata: child_meta(cluster, service_name, component::DATABASE),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_owned()),
            cluster_ip: headless.then(|| "None".to_owned()),
            publish_not_ready_addresses: headless.then_some(true),
            selector,
            ports: Some(vec![postgres_port()]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    };
    let mut replicas = cluster_pod_selector(cluster);
    replicas.insert(labels::ROLE.to_owned(), "replica".to_owned());
    vec![
        service(names::read_write_service(&name), None, false),
        service(names::read_only_service(&name), Some(replicas), false),
        service(
            names::read_any_service(&name),
            Some(cluster_pod_selector(cluster)),
            false,
        ),
        service(
            names::headless_service(&name),
            Some(cluster_pod_selector(cluster)),
            true,
        ),
    ]
}

/// At most one instance down at a time by voluntary disruption, so a drain never takes the
/// primary and its only replica together. Single-instance clusters get none (a PDB would
/// block every node drain forever).
pub fn desired_pod_disruption_budget(cluster: &Cluster) -> Option<PodDisruptionBudget> {
    if cluster.spec.instances < 2 || cluster.spec.shutdown {
        return None;
    }
    Some(PodDisruptionBudget {
        metadata: child_meta(cluster, cluster_name(cluster), component::DATABASE),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(cluster_pod_selector(cluster)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    })
}

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
    let spec = &cluster.spec;
    let pod_labels = {
        let mut labels = labels::cluster_child_labels(&cluster_name, component::DATABASE);
        labels.insert(labels::INSTANCE_NAME.to_owned(), instance.name.clone());
        // Patroni's Kubernetes DCS finds its members by these.
        labels.extend(layout::dcs_labels(&cluster_name));
        if let Some(extra) = &spec.instance_metadata {
            for (key, value) in &extra.labels {
                labels.entry(key.clone()).or_insert_with(|| value.clone());
            }
        }
        labels
    };
    let mut annotations = spec
        .instance_metadata
        .as_ref()
        .map(|m| m.annotations.clone())
        .unwrap_or_default();
    annotations.insert(RESTART_HASH_ANNOTATION.to_owned(), restart_hash.to_owned());

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
        env_var("PGDATA", format!("/pgdata/pg{}", spec.postgres_version)),
    ];
    env.extend(
        secret_env
            .vars
            .iter()
            .map(|(var, secret, key)| env_from_secret(var, secret.clone(), key)),
    );

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
    // archive-push and archive-get run in this container: pgBackRest's configuration,
    // certificates and secret options (crate::plan::pgbackrest).
    let pgbackrest = crate::plan::pgbackrest::instance_pod(cluster);
    if let Some(pgbackrest) = &pgbackrest {
        env.extend(pgbackrest.env.iter().cloned());
        mounts.extend(pgbackrest.mounts.iter().cloned());
    }

    let postgres = Container {
        name: "postgres".to_owned(),
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
    };
    let mut containers = vec![postgres];

    if let Some(pgbackrest) = &pgbackrest {
        let mut server_mounts = vec![
            mount("data", "/pgdata", false),
            mount("run", "/var/run/postgresql", false),
            mount("tmp", "/tmp", false),
        ];
        if spec.wal_storage.is_some() {
            server_mounts.push(mount("wal", "/pgwal", false));
        }
        server_mounts.extend(pgbackrest.mounts.iter().cloned());
        let mut server_env = pgbackrest.env.clone();
        server_env.extend(pgbackrest.server_env.iter().cloned());
        containers.push(Container {
            name: "pgbackrest".to_owned(),
            image: Some(images.postgres_image(cluster)),
            image_pull_policy: spec.image_pull_policy.map(pull_policy),
            command: Some(tusk_pgbackrest::server_command()),
            env: Some(server_env),
            ports: Some(vec![port("pgbackrest", PGBACKREST_PORT)]),
            security_context: Some(restricted_container_security()),
            volume_mounts: Some(server_mounts),
            ..Container::default()
        });
    }
    if spec.monitoring.enabled {
        containers.push(Container {
            name: "exporter".to_owned(),
            image: Some(images.exporter_image(cluster)),
            args: Some(vec![
                "--no-collector.stat_bgwriter".to_owned(),
                crate::plan::monitoring::query_path_arg(),
            ]),
            // The password variable comes first: Kubernetes expands `$(VAR)` only for
            // variables defined earlier in the list.
            env: Some(vec![
                env_from_secret(
                    layout::MONITOR_PASSWORD_ENV,
                    layout::monitor_secret(&cluster_name),
                    tusk_api::names::keys::PASSWORD,
                ),
                env_var("DATA_SOURCE_NAME", layout::data_source_name()),
            ]),
            ports: Some(vec![port("metrics", EXPORTER_PORT)]),
            security_context: Some(restricted_container_security()),
            volume_mounts: Some(vec![
                mount("run", "/var/run/postgresql", false),
                crate::plan::monitoring::volume_mount(),
            ]),
            ..Container::default()
        });
    }

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
    if spec.monitoring.enabled {
        volumes.push(crate::plan::monitoring::volume(cluster));
    }
    if spec.has_repository() {
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
    if let Some(pgbackrest) = &pgbackrest {
        volumes.extend(pgbackrest.volumes.iter().cloned());
    }

    let mut claims = vec![claim(
        "data",
        &spec.storage.size,
        spec.storage.storage_class_name.as_deref(),
    )];
    if let Some(wal) = &spec.wal_storage {
        claims.push(claim("wal", &wal.size, wal.storage_class_name.as_deref()));
    }

    let pod_spec = PodSpec {
        service_account_name: Some(patroni_account_name(cluster)),
        automount_service_account_token: Some(true),
        security_context: Some(PodSecurityContext {
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
        }),
        containers,
        volumes: Some(volumes),
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
    };

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
                    labels: Some(pod_labels),
                    annotations: Some(annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod_spec),
            },
            volume_claim_templates: Some(claims),
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(spec: &str) -> Cluster {
        serde_yaml_ng::from_str(&format!(
            "apiVersion: tusk.dev/v1alpha1\nkind: Cluster\nmetadata: {{name: db, namespace: db, uid: u1}}\nspec:\n{spec}"
        ))
        .unwrap()
    }

    fn statefulset(cluster: &Cluster) -> StatefulSet {
        desired_statefulset(
            cluster,
            &InstancePlan {
                name: "db-1".into(),
                running: true,
            },
            &Images::default(),
            &crate::plan::secrets::secret_env(cluster),
            "hash",
        )
    }

    #[test]
    fn pod_sets_every_variable_the_patroni_config_reads() {
        let c = cluster("  postgresVersion: 17\n  storage: {size: 1Gi}\n");
        let sts = statefulset(&c);
        let pod = sts.spec.unwrap().template.spec.unwrap();
        let env: Vec<String> = pod.containers[0]
            .env
            .clone()
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        for var in layout::INSTANCE_ENV {
            assert!(
                env.iter().any(|e| e == var),
                "{var} missing from the postgres container"
            );
        }
    }

    #[test]
    fn pods_carry_the_labels_patroni_selects_by() {
        let c = cluster("  postgresVersion: 17\n  storage: {size: 1Gi}\n");
        let labels = statefulset(&c)
            .spec
            .unwrap()
            .template
            .metadata
            .unwrap()
            .labels
            .unwrap();
        for (key, value) in layout::dcs_labels("db") {
            assert_eq!(labels.get(&key), Some(&value), "{key}");
        }
    }

    #[test]
    fn every_container_runs_restricted() {
        let c = cluster(
            "  postgresVersion: 17\n  storage: {size: 1Gi}\n  backup: {repositories: [{name: repo1, volume: {size: 1Gi}}]}\n",
        );
        let pod = statefulset(&c).spec.unwrap().template.spec.unwrap();
        assert_eq!(pod.containers.len(), 3, "postgres, pgbackrest, exporter");
        let pod_security = pod.security_context.unwrap();
        assert_eq!(pod_security.run_as_non_root, Some(true));
        assert_eq!(
            pod_security.seccomp_profile.unwrap().type_,
            "RuntimeDefault"
        );
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
    fn anti_affinity_is_preferred_by_default_and_required_on_request() {
        let preferred = cluster("  postgresVersion: 17\n  storage: {size: 1Gi}\n");
        let anti = statefulset(&preferred)
            .spec
            .unwrap()
            .template
            .spec
            .unwrap()
            .affinity
            .unwrap()
            .pod_anti_affinity
            .unwrap();
        assert_eq!(
            anti.preferred_during_scheduling_ignored_during_execution
                .unwrap()
                .len(),
            1
        );
        let required = cluster(
            "  postgresVersion: 17\n  storage: {size: 1Gi}\n  scheduling: {podAntiAffinity: {type: Required}, spreadAcrossZones: true}\n",
        );
        let pod = statefulset(&required).spec.unwrap().template.spec.unwrap();
        assert_eq!(
            pod.affinity
                .unwrap()
                .pod_anti_affinity
                .unwrap()
                .required_during_scheduling_ignored_during_execution
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            pod.topology_spread_constraints.unwrap()[0].topology_key,
            "topology.kubernetes.io/zone"
        );
    }

    #[test]
    fn single_instance_gets_no_disruption_budget() {
        assert!(
            desired_pod_disruption_budget(&cluster(
                "  postgresVersion: 17\n  storage: {size: 1Gi}\n"
            ))
            .is_none()
        );
        assert!(
            desired_pod_disruption_budget(&cluster(
                "  postgresVersion: 17\n  instances: 2\n  storage: {size: 1Gi}\n"
            ))
            .is_some()
        );
    }
}

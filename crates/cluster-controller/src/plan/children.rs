//! Desired children of a Cluster other than Secrets: pure builders, one per kind.
//!
//! Every builder takes the Cluster (and what it needs besides) and returns a typed k8s-openapi
//! object ready for server-side apply. Nothing here reads the API.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount, ServicePort, ServiceSpec};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tusk_api::Cluster;
use tusk_api::labels;
use tusk_api::names::{self, POSTGRES_PORT};

use crate::shared::layout::{PATRONI_CONFIG_KEY, component};
use crate::shared::meta::patroni_account_name;
use crate::shared::meta::{child_meta, cluster_name, namespace};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::instance::*;
    use crate::shared::layout;
    use crate::shared::pod::Images;
    use k8s_openapi::api::apps::v1::StatefulSet;

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

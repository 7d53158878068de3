//! The Pooler's children, pure functions of the Pooler (and its Cluster's CA Secret name):
//!
//! ```text
//!   ConfigMap <p>        pgbouncer.ini                 → mounted at /etc/pgbouncer
//!   Deployment <p>       PgBouncer pods, rolling one at a time (maxSurge 1, maxUnavailable 0),
//!                        restricted security, read-only root, spread over nodes
//!   Service <p>          port 5432 → the pods
//!   PodDisruptionBudget  at most one pod evicted at a time
//! ```
//!
//! The pod template does not carry a hash of `pgbouncer.ini`: a settings change must not
//! restart PgBouncer. The kubelet refreshes the mounted file and the controller sends
//! `RELOAD`; only an image or resource change rolls the pods.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Affinity, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource,
    KeyToPath, PodAffinityTerm, PodAntiAffinity, PodSecurityContext, PodSpec, PodTemplateSpec,
    Probe, ResourceRequirements, SecretKeySelector, SecretVolumeSource, Service, ServicePort,
    ServiceSpec, TCPSocketAction, Volume, VolumeMount, WeightedPodAffinityTerm,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};
use tusk_api::names::keys;
use tusk_api::{Pooler, labels};

use crate::config::{POOLER_PORT, Placement, render_ini};
use crate::secrets::ADMIN_PASSWORD_KEY;
use tusk_runtime::pod::{restricted_container_security, runtime_default_seccomp};

/// The `app.kubernetes.io/component` of every Pooler child.
pub const COMPONENT: &str = "pooler";
/// The label naming the Pooler a child belongs to.
pub const POOLER_LABEL: &str = "tusk.dev/pooler";
/// The key of `pgbouncer.ini` in the ConfigMap.
pub const INI_KEY: &str = "pgbouncer.ini";
/// The key of the auth file in the `<pooler>-auth` Secret.
pub const AUTH_FILE_KEY: &str = "userlist.txt";
/// PgBouncer's user and group in the pod (not root; the image's `pgbouncer` user).
pub const PGBOUNCER_UID: i64 = 70;

/// The `pgbouncer` container's program, run as `/bin/sh -c ENTRYPOINT pgbouncer <ini>`: it
/// starts PgBouncer and turns the kubelet's SIGTERM into a drain. PgBouncer (before 1.23)
/// takes SIGTERM as an immediate shutdown that cuts every transaction in flight; SIGINT is its
/// safe shutdown (PAUSE, then SHUTDOWN once every server connection is back: each running
/// transaction finishes). The script first keeps serving for [`STOP_DELAY_ENV`] seconds, while
/// the pod leaves the Service's endpoints, so clients routed here meanwhile are not refused.
/// SIGHUP is passed on. It exits with PgBouncer's status; the pod's grace period (30 s) bounds
/// the whole drain.
pub const ENTRYPOINT: &str = r#""$0" "$@" &
pid=$!
trap 'sleep "${TUSK_STOP_DELAY_SECONDS:-5}"; kill -INT "$pid"' TERM
trap 'kill -HUP "$pid"' HUP
while :; do
  wait "$pid"
  status=$?
  kill -0 "$pid" 2>/dev/null || exit "$status"
done
"#;
/// The variable with the seconds [`ENTRYPOINT`] keeps serving after SIGTERM.
pub const STOP_DELAY_ENV: &str = "TUSK_STOP_DELAY_SECONDS";
/// Its value in the pod.
pub const STOP_DELAY_SECONDS: u32 = 5;

/// The Secret with the auth file: `<pooler>-auth`.
pub fn auth_secret(pooler: &str) -> String {
    format!("{pooler}-auth")
}

/// The Secret with PgBouncer's client-facing certificate: `<pooler>-tls`.
pub fn tls_secret(pooler: &str) -> String {
    format!("{pooler}-tls")
}

/// Labels of every child, and the pods' selector (the last two).
pub fn child_labels(pooler: &Pooler) -> BTreeMap<String, String> {
    let mut out = labels::cluster_child_labels(&pooler.spec.cluster.name, COMPONENT);
    out.insert(labels::INSTANCE.to_owned(), pooler.name_any());
    out.insert(POOLER_LABEL.to_owned(), pooler.name_any());
    out
}

/// What selects the Pooler's pods: its name and the component, which no Job pod shares.
pub fn pod_selector(pooler: &Pooler) -> BTreeMap<String, String> {
    BTreeMap::from([
        (POOLER_LABEL.to_owned(), pooler.name_any()),
        (labels::COMPONENT.to_owned(), COMPONENT.to_owned()),
    ])
}

fn meta(pooler: &Pooler, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: pooler.namespace(),
        labels: Some(child_labels(pooler)),
        owner_references: pooler.controller_owner_ref(&()).map(|r| vec![r]),
        ..ObjectMeta::default()
    }
}

/// `ConfigMap <pooler>` with `pgbouncer.ini`.
pub fn desired_config_map(pooler: &Pooler, namespace: &str) -> ConfigMap {
    ConfigMap {
        metadata: meta(pooler, pooler.name_any()),
        data: Some(BTreeMap::from([(
            INI_KEY.to_owned(),
            render_ini(pooler, &Placement::in_pod(pooler, namespace)),
        )])),
        ..ConfigMap::default()
    }
}

/// `Service <pooler>`: where clients connect, `<pooler>.<namespace>.svc:5432`.
pub fn desired_service(pooler: &Pooler) -> Service {
    Service {
        metadata: meta(pooler, pooler.name_any()),
        spec: Some(ServiceSpec {
            selector: Some(pod_selector(pooler)),
            ports: Some(vec![ServicePort {
                name: Some("pgbouncer".to_owned()),
                port: i32::from(POOLER_PORT),
                target_port: Some(IntOrString::String("pgbouncer".to_owned())),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// At most one PgBouncer pod is evicted at a time.
pub fn desired_pod_disruption_budget(pooler: &Pooler) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: meta(pooler, pooler.name_any()),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(pod_selector(pooler)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }
}

/// What the pod template is made from besides the Pooler.
#[derive(Clone, Copy, Debug)]
pub struct PodInputs<'a> {
    /// The PgBouncer image.
    pub image: &'a str,
    /// The Secret whose `ca.crt` the Cluster's server certificate chains to.
    pub server_ca_secret: &'a str,
    /// The image of the `metrics` sidecar (`tusk-operator pgbouncer-exporter`): the operator's
    /// own. `None`: no sidecar.
    pub exporter_image: Option<&'a str>,
    /// PgBouncer's current certificate: its digest is on the pod template, so a new
    /// certificate rolls the pods (PgBouncer 1.18 re-reads TLS files on RELOAD, but the
    /// controller cannot see when the kubelet has refreshed them).
    pub certificate_pem: &'a str,
}

/// The pod template annotation carrying the certificate's digest.
pub const CERTIFICATE_ANNOTATION: &str = "tusk.dev/certificate-digest";

/// The metrics sidecar's port (named `metrics`, which the chart's PodMonitor scrapes).
pub const METRICS_PORT: i32 = 9127;
/// The environment variable the metrics sidecar reads the admin password from.
pub const EXPORTER_PASSWORD_ENV: &str = "TUSK_PGBOUNCER_PASSWORD";

/// `Deployment <pooler>` running PgBouncer from `inputs`.
pub fn desired_deployment(pooler: &Pooler, inputs: &PodInputs<'_>) -> Deployment {
    let (image, server_ca_secret) = (inputs.image, inputs.server_ca_secret);
    let name = pooler.name_any();
    let mut pod_labels = child_labels(pooler);
    pod_labels.extend(pod_selector(pooler));
    Deployment {
        metadata: meta(pooler, name.clone()),
        spec: Some(DeploymentSpec {
            replicas: Some(pooler.spec.instances),
            selector: LabelSelector {
                match_labels: Some(pod_selector(pooler)),
                ..LabelSelector::default()
            },
            // One new pod ready before an old one goes: clients always have somewhere to go.
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".to_owned()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(1)),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(BTreeMap::from([(
                        CERTIFICATE_ANNOTATION.to_owned(),
                        format!(
                            "{:08x}",
                            tusk_api::names::fnv1a32(inputs.certificate_pem.as_bytes())
                        ),
                    )])),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod_spec(
                    pooler,
                    image,
                    server_ca_secret,
                    inputs.exporter_image,
                )),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

fn pod_spec(
    pooler: &Pooler,
    image: &str,
    server_ca_secret: &str,
    exporter_image: Option<&str>,
) -> PodSpec {
    let name = pooler.name_any();
    PodSpec {
        containers: std::iter::once(container(pooler, image))
            .chain(exporter_image.map(|image| metrics_container(pooler, image)))
            .collect(),
        volumes: Some(vec![
            Volume {
                name: "config".to_owned(),
                config_map: Some(ConfigMapVolumeSource {
                    name: name.clone(),
                    ..ConfigMapVolumeSource::default()
                }),
                ..Volume::default()
            },
            secret_volume("auth", &auth_secret(&name), &[AUTH_FILE_KEY]),
            secret_volume("tls", &tls_secret(&name), &[keys::TLS_CERT, keys::TLS_KEY]),
            secret_volume("server-ca", server_ca_secret, &[keys::CA_CERT]),
        ]),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(PGBOUNCER_UID),
            run_as_group: Some(PGBOUNCER_UID),
            fs_group: Some(PGBOUNCER_UID),
            seccomp_profile: Some(runtime_default_seccomp()),
            ..PodSecurityContext::default()
        }),
        affinity: Some(spread(pooler)),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        ..PodSpec::default()
    }
}

fn container(pooler: &Pooler, image: &str) -> Container {
    let probe = |initial: i32| Probe {
        tcp_socket: Some(TCPSocketAction {
            port: IntOrString::String("pgbouncer".to_owned()),
            ..TCPSocketAction::default()
        }),
        initial_delay_seconds: Some(initial),
        period_seconds: Some(10),
        ..Probe::default()
    };
    Container {
        name: "pgbouncer".to_owned(),
        image: Some(image.to_owned()),
        command: Some(vec![
            "/bin/sh".to_owned(),
            "-c".to_owned(),
            ENTRYPOINT.to_owned(),
            "pgbouncer".to_owned(),
            format!("/etc/pgbouncer/config/{INI_KEY}"),
        ]),
        env: Some(vec![EnvVar {
            name: STOP_DELAY_ENV.to_owned(),
            value: Some(STOP_DELAY_SECONDS.to_string()),
            ..Default::default()
        }]),
        ports: Some(vec![ContainerPort {
            name: Some("pgbouncer".to_owned()),
            container_port: i32::from(POOLER_PORT),
            ..ContainerPort::default()
        }]),
        readiness_probe: Some(probe(1)),
        liveness_probe: Some(probe(10)),
        resources: Some(
            pooler
                .spec
                .resources
                .clone()
                .unwrap_or_else(default_resources),
        ),
        security_context: Some(restricted_container_security()),
        volume_mounts: Some(
            [
                ("config", "/etc/pgbouncer/config"),
                ("auth", "/etc/pgbouncer/auth"),
                ("tls", "/etc/pgbouncer/tls"),
                ("server-ca", "/etc/pgbouncer/server-ca"),
            ]
            .into_iter()
            .map(|(name, path)| VolumeMount {
                name: name.to_owned(),
                mount_path: path.to_owned(),
                read_only: Some(true),
                ..VolumeMount::default()
            })
            .collect(),
        ),
        ..Container::default()
    }
}

/// The `metrics` sidecar: `tusk-operator pgbouncer-exporter` reading this pod's admin console
/// over TLS (verified for the Service name against the Cluster's CA) and serving Prometheus
/// text on 9127. Its health does not depend on PgBouncer (`pgbouncer_up 0` instead), so it
/// never makes the pod unready.
fn metrics_container(pooler: &Pooler, image: &str) -> Container {
    let namespace = pooler.namespace().unwrap_or_default();
    let probe = |initial: i32| Probe {
        http_get: Some(k8s_openapi::api::core::v1::HTTPGetAction {
            path: Some("/healthz".to_owned()),
            port: IntOrString::String("metrics".to_owned()),
            ..Default::default()
        }),
        initial_delay_seconds: Some(initial),
        period_seconds: Some(10),
        ..Probe::default()
    };
    Container {
        name: "metrics".to_owned(),
        image: Some(image.to_owned()),
        args: Some(vec![
            "pgbouncer-exporter".to_owned(),
            format!("--listen=0.0.0.0:{METRICS_PORT}"),
            "--pgbouncer-host=127.0.0.1".to_owned(),
            format!("--pgbouncer-port={POOLER_PORT}"),
            format!(
                "--server-name={}",
                tusk_api::names::pooler_host(&pooler.name_any(), &namespace)
            ),
            format!("--ca-file=/etc/pgbouncer/server-ca/{}", keys::CA_CERT),
            "--log-format=json".to_owned(),
        ]),
        env: Some(vec![EnvVar {
            name: EXPORTER_PASSWORD_ENV.to_owned(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: auth_secret(&pooler.name_any()),
                    key: ADMIN_PASSWORD_KEY.to_owned(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }]),
        ports: Some(vec![ContainerPort {
            name: Some("metrics".to_owned()),
            container_port: METRICS_PORT,
            ..ContainerPort::default()
        }]),
        readiness_probe: Some(probe(1)),
        liveness_probe: Some(probe(10)),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_owned(), Quantity("10m".to_owned())),
                ("memory".to_owned(), Quantity("16Mi".to_owned())),
            ])),
            limits: Some(BTreeMap::from([(
                "memory".to_owned(),
                Quantity("64Mi".to_owned()),
            )])),
            ..ResourceRequirements::default()
        }),
        security_context: Some(restricted_container_security()),
        volume_mounts: Some(vec![VolumeMount {
            name: "server-ca".to_owned(),
            mount_path: "/etc/pgbouncer/server-ca".to_owned(),
            read_only: Some(true),
            ..VolumeMount::default()
        }]),
        ..Container::default()
    }
}

/// Requests 50m CPU and 32Mi memory, limit 256Mi memory (PgBouncer needs about 2 KiB per
/// client connection plus its buffers).
fn default_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_owned(), Quantity("50m".to_owned())),
            ("memory".to_owned(), Quantity("32Mi".to_owned())),
        ])),
        limits: Some(BTreeMap::from([(
            "memory".to_owned(),
            Quantity("256Mi".to_owned()),
        )])),
        ..ResourceRequirements::default()
    }
}

/// Preferably one PgBouncer pod per node.
fn spread(pooler: &Pooler) -> Affinity {
    Affinity {
        pod_anti_affinity: Some(PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![
                WeightedPodAffinityTerm {
                    weight: 100,
                    pod_affinity_term: PodAffinityTerm {
                        label_selector: Some(LabelSelector {
                            match_labels: Some(pod_selector(pooler)),
                            ..LabelSelector::default()
                        }),
                        topology_key: "kubernetes.io/hostname".to_owned(),
                        ..PodAffinityTerm::default()
                    },
                },
            ]),
            ..PodAntiAffinity::default()
        }),
        ..Affinity::default()
    }
}

/// A Secret volume with only `keys`, readable by PgBouncer's group.
fn secret_volume(name: &str, secret: &str, keys: &[&str]) -> Volume {
    Volume {
        name: name.to_owned(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.to_owned()),
            default_mode: Some(0o440),
            items: Some(
                keys.iter()
                    .map(|key| KeyToPath {
                        key: (*key).to_owned(),
                        path: (*key).to_owned(),
                        ..KeyToPath::default()
                    })
                    .collect(),
            ),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(image: &str) -> PodInputs<'_> {
        PodInputs {
            image,
            server_ca_secret: "db-ca",
            exporter_image: Some("ghcr.io/tusk-operator/tusk-operator:0.1.0"),
            certificate_pem: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        }
    }

    fn pooler(spec: &str) -> Pooler {
        serde_yaml_ng::from_str(&format!(
            "apiVersion: tusk.dev/v1alpha1\nkind: Pooler\nmetadata: {{name: db-pooler, namespace: shop, uid: u1}}\nspec:\n  cluster: {{name: db}}\n{spec}"
        ))
        .unwrap()
    }

    #[test]
    fn the_children_of_a_minimal_pooler() {
        let pooler = pooler("");
        let children = serde_json::json!({
            "configMap": desired_config_map(&pooler, "shop"),
            "service": desired_service(&pooler),
            "pdb": desired_pod_disruption_budget(&pooler),
            "deployment": desired_deployment(&pooler, &inputs("ghcr.io/tusk-operator/pgbouncer:1.18")),
        });
        insta::assert_yaml_snapshot!("minimal_children", children);
    }

    #[test]
    fn a_settings_change_changes_the_config_map_but_not_the_pod_template() {
        let before = pooler("");
        let after = pooler("  pgbouncer: {defaultPoolSize: 50}\n");
        assert_ne!(
            desired_config_map(&before, "shop"),
            desired_config_map(&after, "shop")
        );
        let template = |p: &Pooler| desired_deployment(p, &inputs("img")).spec.unwrap().template;
        assert_eq!(
            template(&before),
            template(&after),
            "reloaded, not restarted"
        );
        let resized = pooler("  resources: {limits: {memory: 1Gi}}\n");
        assert_ne!(
            template(&before),
            template(&resized),
            "a resource change rolls"
        );
    }

    #[test]
    fn pods_are_selected_by_pooler_and_component_only() {
        let pooler = pooler("  instances: 3\n");
        let deployment = desired_deployment(&pooler, &inputs("img"));
        let spec = deployment.spec.unwrap();
        assert_eq!(spec.replicas, Some(3));
        assert_eq!(
            spec.selector.match_labels.unwrap(),
            BTreeMap::from([
                (
                    "app.kubernetes.io/component".to_owned(),
                    "pooler".to_owned()
                ),
                ("tusk.dev/pooler".to_owned(), "db-pooler".to_owned()),
            ])
        );
        let owner = deployment.metadata.owner_references.unwrap();
        assert_eq!(owner[0].kind, "Pooler");
        assert_eq!(owner[0].controller, Some(true));
    }
}

//! Building blocks of pod templates shared by the instance StatefulSets, the pgBackRest
//! repository host and the Jobs: images, container security, environment, mounts, ports,
//! volumes and claim templates. A leaf beside [`super::layout`].

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource, HTTPGetAction, ObjectFieldSelector,
    PersistentVolumeClaim, PersistentVolumeClaimSpec, PodSecurityContext, Probe, SecretKeySelector,
    Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tusk_api::Cluster;
use tusk_api::cluster::ImagePullPolicy;
use tusk_api::names::PATRONI_PORT;

use super::layout::POSTGRES_UID;
pub use tusk_runtime::pod::restricted_container_security;

/// Images the operator is configured with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Images {
    /// The instance image for a major, with `{major}` replaced (e.g.
    /// `ghcr.io/tusk-operator/postgres:{major}`).
    pub postgres_template: String,
    /// The postgres_exporter image.
    pub exporter: String,
}

impl Default for Images {
    fn default() -> Self {
        Self {
            postgres_template: "ghcr.io/tusk-operator/postgres:{major}".to_owned(),
            exporter: "quay.io/prometheuscommunity/postgres-exporter:v0.17.1".to_owned(),
        }
    }
}

impl Images {
    /// The instance image of `cluster`: `spec.image`, else the template for its major.
    pub fn postgres_image(&self, cluster: &Cluster) -> String {
        cluster.spec.image.clone().unwrap_or_else(|| {
            self.postgres_template
                .replace("{major}", &cluster.spec.postgres_version.to_string())
        })
    }

    /// The exporter image of `cluster`.
    pub fn exporter_image(&self, cluster: &Cluster) -> String {
        cluster
            .spec
            .monitoring
            .image
            .clone()
            .unwrap_or_else(|| self.exporter.clone())
    }
}

/// Where the Secrets holding Patroni's passwords live, and under which keys: supplied by the
/// Secrets module so the pod and the Secrets never disagree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretEnv {
    /// (environment variable, Secret name, key)
    pub vars: Vec<(String, String, String)>,
}

pub fn env_var(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.into()),
        ..EnvVar::default()
    }
}

pub fn env_from_field(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.to_owned(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

pub fn env_from_secret(name: &str, secret: String, key: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret,
                key: key.to_owned(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

pub fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    }
}

pub fn http_probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::Int(i32::from(PATRONI_PORT)),
            scheme: Some("HTTP".to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(5),
        ..Probe::default()
    }
}

pub fn port(name: &str, number: u16) -> ContainerPort {
    ContainerPort {
        name: Some(name.to_owned()),
        container_port: i32::from(number),
        protocol: Some("TCP".to_owned()),
        ..ContainerPort::default()
    }
}

pub fn pull_policy(policy: ImagePullPolicy) -> String {
    match policy {
        ImagePullPolicy::Always => "Always",
        ImagePullPolicy::IfNotPresent => "IfNotPresent",
        ImagePullPolicy::Never => "Never",
    }
    .to_owned()
}

pub fn empty_dir(name: &str, medium: Option<&str>) -> Volume {
    Volume {
        name: name.to_owned(),
        empty_dir: Some(EmptyDirVolumeSource {
            medium: medium.map(str::to_owned),
            ..EmptyDirVolumeSource::default()
        }),
        ..Volume::default()
    }
}

pub fn claim(name: &str, size: &Quantity, class: Option<&str>) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".to_owned()]),
            storage_class_name: class.map(str::to_owned),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".to_owned(), size.clone())])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    }
}

/// The pod security of every pod that runs the instance image (instances, the repository
/// host): the image's `postgres` user, group-owned volumes, the runtime's seccomp profile.
pub fn postgres_pod_security() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(POSTGRES_UID),
        run_as_group: Some(POSTGRES_UID),
        fs_group: Some(POSTGRES_UID),
        fs_group_change_policy: Some("OnRootMismatch".to_owned()),
        seccomp_profile: Some(tusk_runtime::pod::runtime_default_seccomp()),
        ..PodSecurityContext::default()
    }
}

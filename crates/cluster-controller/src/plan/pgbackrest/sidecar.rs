//! What pgBackRest adds to an instance pod: the `pgbackrest` sidecar (its TLS server, which
//! backups and the stanza Job reach), the `postgres` container's archive settings, and the
//! restore bootstrap's additions.

use super::settings::{
    CONFIG_VOLUME, RESTORE_CONFIG_VOLUME, SOURCE_TLS_VOLUME, TLS_VOLUME, config_volume,
    instance_settings, resolve_restore, tls_volume,
};
use crate::observe::backup::ObservedBackup;
use crate::shared::layout::restore_spec;
use crate::shared::pod::{Images, mount, port, pull_policy, restricted_container_security};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Container;
use k8s_openapi::api::core::v1::{EnvVar, Volume, VolumeMount};
use tusk_api::Cluster;
use tusk_api::names::PGBACKREST_PORT;
use tusk_pgbackrest::restore::{self};

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

/// What a restoring Cluster's `postgres` container needs besides its own pgBackRest setup.
#[derive(Clone, Debug, PartialEq)]
pub struct RestorePod {
    pub env: Vec<EnvVar>,
    pub volumes: Vec<Volume>,
    pub mounts: Vec<VolumeMount>,
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

/// The `pgbackrest` sidecar: pgBackRest's TLS server, which backups and the stanza Job reach
/// for the data directory.
pub fn sidecar_container(
    cluster: &Cluster,
    images: &Images,
    pgbackrest: &InstancePod,
) -> Container {
    let spec = &cluster.spec;
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
    Container {
        name: "pgbackrest".to_owned(),
        image: Some(images.postgres_image(cluster)),
        image_pull_policy: spec.image_pull_policy.map(pull_policy),
        command: Some(tusk_pgbackrest::server_command()),
        env: Some(server_env),
        ports: Some(vec![port("pgbackrest", PGBACKREST_PORT)]),
        security_context: Some(restricted_container_security()),
        volume_mounts: Some(server_mounts),
        ..Container::default()
    }
}
